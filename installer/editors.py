"""Dispatch plug-in installation to each editor's installer module."""

from __future__ import annotations

import importlib
from typing import List, Optional

from .common import Engine, InstallError, Manifest

NAMES = ["gimp", "krita"]


def _module(name: str):
    return importlib.import_module(f"installer.{name}")


def install_all(engine: Engine, manifest: Manifest, names: Optional[List[str]]) -> None:
    """Install the plug-in into each editor named, or into every editor found when `names` is None.

    An editor named explicitly must succeed; an editor that is merely not found is reported and
    skipped when none was named.
    """
    explicit = names is not None
    for name in names if explicit else NAMES:
        try:
            installed = _module(name).install(engine, manifest, required=explicit)
        except InstallError:
            manifest.save()
            raise
        for path in installed:
            print(f"- {name} plug-in installed in {path}")


def uninstall_all(manifest: Manifest) -> None:
    for name in NAMES:
        for path in _module(name).uninstall(manifest):
            print(f"- {name} plug-in removed from {path}")
