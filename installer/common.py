"""Facts and records shared by the installer's steps (standard library only, Python 3.9+)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

CHECKOUT = Path(__file__).resolve().parent.parent
CATALOGUE_PATH = CHECKOUT / "models" / "catalogue.json"
DEFAULT_MODELS_DIR = CHECKOUT / "models" / "files"
MODELS_DIR_VARIABLE = "AI_REMOVE_BACKGROUND_MODELS"
ENGINE_FILE_NAME = "engine.json"
WORKER_CLIENT_PATH = CHECKOUT / "core" / "worker_client.py"
# A folder holding this file was created by install.py; no other folder is ever replaced or removed.
OWNER_MARKER = ".installed-by-ai-remove-background"
MANIFEST_NAME = "ai-remove-background-install.json"


class InstallError(Exception):
    """A failed step, with a message that names what failed and what to do."""


def load_catalogue() -> Dict[str, Any]:
    with open(CATALOGUE_PATH, encoding="utf-8") as file:
        return json.load(file)


@dataclass
class Engine:
    """The engine's location, written into each editor plug-in as engine.json."""

    python: Path
    models_dir: Path

    def config(self) -> Dict[str, Any]:
        return {
            "python": str(self.python),
            "environment": {MODELS_DIR_VARIABLE: str(self.models_dir)},
        }


@dataclass
class Manifest:
    """The record of what this installation created, so that --uninstall removes exactly that."""

    path: Path
    created: List[str] = field(default_factory=list)
    settings: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except FileNotFoundError:
            return cls(path)
        return cls(path, list(data.get("created", [])), dict(data.get("settings", {})))

    def record(self, created_path: Path) -> None:
        text = str(created_path)
        if text not in self.created:
            self.created.append(text)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"created": self.created, "settings": self.settings}, file, indent=1)
        os.replace(temporary, self.path)


def copy_owned_folder(source: Path, target: Path, manifest: Manifest) -> None:
    """Copy `source` to `target`, replacing `target` only if an earlier install created it.

    Raises InstallError when `target` exists without our marker: it belongs to the user or to
    another tool, and is left untouched.
    """
    if target.exists() or target.is_symlink():
        if not (target / OWNER_MARKER).is_file():
            raise InstallError(
                f"{target} exists and was not created by this installer: "
                "move it away or pass another folder, then run install.py again"
            )
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source, target, ignore=ignore)
    (target / OWNER_MARKER).write_text("Created by ai-remove-background's install.py; removed by --uninstall.\n")
    manifest.record(target)


def remove_owned_path(path: Path) -> bool:
    """Remove a file, or a folder carrying our marker; return False if left in place."""
    if path.is_dir() and not path.is_symlink():
        if not (path / OWNER_MARKER).is_file():
            return False
        shutil.rmtree(path)
        return True
    if path.exists() or path.is_symlink():
        path.unlink()
        return True
    return False


def write_engine_file(plugin_dir: Path, engine: Engine) -> None:
    """Write engine.json and the worker client into an installed plug-in folder."""
    with open(plugin_dir / ENGINE_FILE_NAME, "w", encoding="utf-8") as file:
        json.dump(engine.config(), file, indent=1)
    shutil.copy2(WORKER_CLIENT_PATH, plugin_dir / WORKER_CLIENT_PATH.name)
