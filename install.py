#!/usr/bin/env python3
"""Set up ai-remove-background: the engine's environment, its models and the editor plug-ins.

Standard library only, so that any python3 of version 3.9 or newer can run it:

    python3 install.py                      # engine, default models, GIMP and Krita plug-ins
    python3 install.py --models rvm         # add a model
    python3 install.py --models-from DIR    # take model files from a folder (offline machines)
    python3 install.py --uninstall          # remove what earlier runs installed

Running it again is safe: finished steps are checked and kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

MINIMUM_PYTHON = (3, 9)

if sys.version_info < MINIMUM_PYTHON:
    sys.exit(
        "install.py needs Python 3.9 or newer, this is %d.%d: run it with a newer python3"
        % sys.version_info[:2]
    )

sys.path.insert(0, str(Path(__file__).resolve().parent))

from installer import editors, models  # noqa: E402
from installer.common import (  # noqa: E402
    CHECKOUT,
    DEFAULT_MODELS_DIR,
    MANIFEST_NAME,
    Engine,
    InstallError,
    Manifest,
    load_catalogue,
    remove_owned_path,
)

DEFAULT_VENV = CHECKOUT / ".venv"
# Free space needed for the environment and the default models, with room to spare.
REQUIRED_FREE_BYTES = 1_500_000_000


def venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def run_step(description: str, command: List[str]) -> None:
    """Run one installer command, turning a failure into an InstallError with its last output."""
    print(f"- {description}", flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        hint = ""
        if "Could not find a version" in result.stdout or "Failed to establish" in result.stdout:
            hint = " (PyPI may be unreachable: check the network or proxy, or set PIP_INDEX_URL to a mirror)"
        raise InstallError(f"{description} failed{hint}:\n{tail}")


def check_free_space(folder: Path) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < REQUIRED_FREE_BYTES:
        raise InstallError(
            f"only {free / 1e9:.1f} GB free at {existing}, the engine needs about "
            f"{REQUIRED_FREE_BYTES / 1e9:.1f} GB: free some space or pass --venv on another disk"
        )


def create_environment(venv: Path, with_tests: bool) -> Path:
    """Create the virtual environment (once) and install the pinned dependencies into it."""
    python = venv_python(venv)
    if not python.exists():
        check_free_space(venv)
        print(f"- creating the engine's environment in {venv}", flush=True)
        try:
            import venv as venv_module

            venv_module.EnvBuilder(with_pip=True, clear=False).create(str(venv))
        except Exception as error:  # venv raises many kinds; all mean the same to the user
            raise InstallError(
                f"creating the environment {venv} failed ({error}): on Debian or Ubuntu install "
                "the python3-venv package, then run install.py again"
            ) from None
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    run_step("installing pinned dependencies (numpy, onnxruntime, Pillow, SciPy, tqdm)",
             pip + ["-r", str(CHECKOUT / "requirements.txt")])
    if with_tests:
        run_step("installing test dependencies (pytest, hypothesis)",
                 pip + ["-r", str(CHECKOUT / "requirements-test.txt")])
    run_step("installing the engine", pip + ["--no-deps", "--editable", str(CHECKOUT)])
    return python


def parse_arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    catalogue = load_catalogue()
    parser = argparse.ArgumentParser(description="Install or uninstall ai-remove-background.")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help="folder of the engine's virtual environment (default: %(default)s)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help=f"folder for model files (default: {DEFAULT_MODELS_DIR})")
    parser.add_argument("--models", nargs="+", metavar="NAME", default=[],
                        choices=sorted(catalogue["models"]),
                        help="models to fetch in addition to the default ones: %(choices)s")
    parser.add_argument("--models-from", type=Path, metavar="DIR",
                        help="take model files from this folder instead of downloading them")
    parser.add_argument("--no-models", action="store_true", help="fetch no model files")
    parser.add_argument("--dev", action="store_true", help="also install the test dependencies")
    parser.add_argument("--editors", nargs="*", choices=editors.NAMES, default=None,
                        help="editors to install the plug-in into (default: every one found)")
    parser.add_argument("--no-editors", action="store_true", help="install no editor plug-in")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove the plug-ins, models and environment that install.py created")
    return parser.parse_args(argv)


def install(arguments: argparse.Namespace) -> None:
    catalogue = load_catalogue()
    venv = arguments.venv.resolve()
    models_dir = (arguments.models_dir or DEFAULT_MODELS_DIR).resolve()
    manifest = Manifest.load(venv / MANIFEST_NAME)

    python = create_environment(venv, arguments.dev)
    manifest.settings.update({"venv": str(venv), "models_dir": str(models_dir)})
    manifest.save()

    if not arguments.no_models:
        names = list(dict.fromkeys(catalogue["default_install"] + arguments.models))
        models.pip_python = str(python)
        models.fetch_models(names, models_dir, catalogue, offline_dir=arguments.models_from)

    if not arguments.no_editors:
        engine = Engine(python=python, models_dir=models_dir)
        editors.install_all(engine, manifest, arguments.editors)
        manifest.save()

    print(f"\nDone. Try: {venv_python(venv).parent / 'ai-remove-background'} "
          f"{CHECKOUT / 'samples' / 'astronaut.jpg'} -o cutout.png")


def uninstall(arguments: argparse.Namespace) -> None:
    venv = arguments.venv.resolve()
    manifest = Manifest.load(venv / MANIFEST_NAME)
    editors.uninstall_all(manifest)
    models_dir = Path(manifest.settings.get("models_dir", arguments.models_dir or DEFAULT_MODELS_DIR))
    models.remove_models(models_dir, load_catalogue())
    for created in reversed(manifest.created):
        if not remove_owned_path(Path(created)) and Path(created).exists():
            print(f"- left in place (not created by install.py): {created}")
    if venv_python(venv).exists():
        print(f"- removing the environment {venv}")
        shutil.rmtree(venv)
    print("Uninstalled.")


def main(argv: Optional[List[str]] = None) -> int:
    arguments = parse_arguments(argv)
    try:
        if arguments.uninstall:
            uninstall(arguments)
        else:
            install(arguments)
    except InstallError as error:
        print(f"\ninstall.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninstall.py: interrupted; run it again to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
