"""install.py end to end: a second run leaves the same state, --uninstall removes exactly its own files.

Runs the real install.py with a new virtual environment in a temporary folder, and with HOME and
GIMP3_DIRECTORY pointing into that folder, so the user's own editors are never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
MANIFEST_NAME = "ai-remove-background-install.json"


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Map every path under `folder` to its bytes (None for folders)."""
    state: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        state[relative] = None if path.is_dir() else path.read_bytes()
    return state


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("install")
    home = root / "home"
    (home / ".local" / "share" / "krita").mkdir(parents=True)  # Krita is "found" by its data folder
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "kritarc").write_text("[General]\nuser_setting=kept\n")
    gimp = root / "gimp3"
    gimp.mkdir()
    return {"root": root, "home": home, "gimp": gimp, "venv": root / "venv", "models": root / "models"}


def run_install(sandbox: dict[str, Path], *arguments: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(sandbox["home"]), GIMP3_DIRECTORY=str(sandbox["gimp"]))
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    command = [sys.executable, str(CHECKOUT / "install.py"), "--venv", str(sandbox["venv"]),
               "--models-dir", str(sandbox["models"]), "--no-models", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def installed_twice(sandbox: dict[str, Path]) -> tuple[dict, dict]:
    first = run_install(sandbox, "--editors", "gimp", "krita")
    assert first.returncode == 0, first.stderr
    after_first = snapshot(sandbox["home"]) | {"gimp/" + key: value for key, value in snapshot(sandbox["gimp"]).items()}
    second = run_install(sandbox, "--editors", "gimp", "krita")
    assert second.returncode == 0, second.stderr
    after_second = snapshot(sandbox["home"]) | {"gimp/" + key: value for key, value in snapshot(sandbox["gimp"]).items()}
    return after_first, after_second


def test_second_run_same_state(installed_twice: tuple[dict, dict]) -> None:
    after_first, after_second = installed_twice
    assert after_first == after_second


def test_plugins_point_at_engine(sandbox: dict[str, Path], installed_twice: tuple[dict, dict]) -> None:
    gimp_engine = sandbox["gimp"] / "plug-ins" / "ai-remove-background" / "engine.json"
    krita_engine = sandbox["home"] / ".local/share/krita/pykrita/ai_remove_background/engine.json"
    for engine_file in (gimp_engine, krita_engine):
        config = json.loads(engine_file.read_text())
        assert Path(config["python"]).parent.parent == sandbox["venv"]
        assert config["environment"]["AI_REMOVE_BACKGROUND_MODELS"] == str(sandbox["models"])


def test_kritarc_keeps_user_lines(sandbox: dict[str, Path], installed_twice: tuple[dict, dict]) -> None:
    kritarc = (sandbox["home"] / ".config" / "kritarc").read_text()
    assert "user_setting=kept" in kritarc
    assert kritarc.count("enable_ai_remove_background=true") == 1


def test_unrelated_folder_never_overwritten(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".local/share/krita").mkdir(parents=True)
    gimp = tmp_path / "gimp3"
    foreign = gimp / "plug-ins" / "ai-remove-background"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("the user's own file\n")
    sandbox = {"home": home, "gimp": gimp, "venv": tmp_path / "venv", "models": tmp_path / "models"}

    result = run_install(sandbox, "--editors", "gimp")

    assert result.returncode == 1
    assert "was not created by this installer" in result.stderr
    assert sorted(path.name for path in foreign.iterdir()) == ["mine.txt"]
    assert (foreign / "mine.txt").read_text() == "the user's own file\n"


def test_uninstall_removes_exactly_its_files(sandbox: dict[str, Path], installed_twice: tuple[dict, dict]) -> None:
    unrelated = sandbox["gimp"] / "plug-ins" / "someone-else"
    unrelated.mkdir(parents=True, exist_ok=True)
    (unrelated / "someone-else.py").write_text("print('hello')\n")

    result = run_install(sandbox, "--uninstall")

    assert result.returncode == 0, result.stderr
    assert not sandbox["venv"].exists()
    assert not (sandbox["gimp"] / "plug-ins" / "ai-remove-background").exists()
    assert not (sandbox["home"] / ".local/share/krita/pykrita/ai_remove_background").exists()
    assert not (sandbox["home"] / ".local/share/krita/pykrita/ai_remove_background.desktop").exists()
    assert (unrelated / "someone-else.py").read_text() == "print('hello')\n"
    kritarc = (sandbox["home"] / ".config" / "kritarc").read_text()
    assert "user_setting=kept" in kritarc
    assert "enable_ai_remove_background" not in kritarc
