"""Install the GIMP 3 plug-in into GIMP's per-user plug-ins folders (standard library only, Python 3.9+).

GIMP 3 loads a Python plug-in from `plug-ins/NAME/NAME.py` inside its configuration folder when the
script is executable and starts with a `#!/usr/bin/env python3` line in LF line endings.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import List

from .common import (
    CATALOGUE_PATH,
    CHECKOUT,
    Engine,
    InstallError,
    Manifest,
    copy_owned_folder,
    remove_owned_path,
    write_engine_file,
)

PLUGIN_NAME = "ai-remove-background"
PLUGIN_SOURCE = CHECKOUT / "gimp_plugin" / PLUGIN_NAME
SCRIPT_NAME = PLUGIN_NAME + ".py"
# GIMP's own override of its configuration folder (the folder that contains plug-ins/).
GIMP_DIRECTORY_VARIABLE = "GIMP3_DIRECTORY"
GIMP_VERSION_FOLDER = Path("GIMP") / "3.0"
MANIFEST_KEY = "gimp_plugin_folders"


def configuration_folders() -> List[Path]:
    """Return GIMP 3 configuration folders to install into, most specific first.

    GIMP3_DIRECTORY wins alone when set. Otherwise: the native folder of this platform, then on
    Linux the Flatpak and Snap folders.
    """
    override = os.environ.get(GIMP_DIRECTORY_VARIABLE)
    if override:
        return [Path(override).expanduser()]
    home = Path.home()
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else home / "AppData" / "Roaming"
        return [base / GIMP_VERSION_FOLDER]
    if sys.platform == "darwin":
        return [home / "Library" / "Application Support" / GIMP_VERSION_FOLDER]
    config_home = os.environ.get("XDG_CONFIG_HOME")
    native = (Path(config_home) if config_home else home / ".config") / GIMP_VERSION_FOLDER
    return [
        native,
        home / ".var" / "app" / "org.gimp.GIMP" / "config" / GIMP_VERSION_FOLDER,
        home / "snap" / "gimp" / "current" / ".config" / GIMP_VERSION_FOLDER,
    ]


def find_configuration_folders(required: bool) -> List[Path]:
    """Return the configuration folders that exist, or GIMP's default folder when none does and `required`.

    GIMP creates its folder on its first start, so an existing folder means GIMP 3 has run. With
    GIMP3_DIRECTORY set, that folder is used even if GIMP has not created it yet.
    """
    candidates = configuration_folders()
    if os.environ.get(GIMP_DIRECTORY_VARIABLE):
        return candidates
    found = [folder for folder in candidates if folder.is_dir()]
    if not found and required:
        # NOTE: creating the folder before GIMP's first start makes GIMP skip importing the
        # settings of an older GIMP version: GIMP's app/app.c runs that import only when the
        # folder is missing.
        return candidates[:1]
    return found


def make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def normalise_line_endings(path: Path) -> None:
    """Rewrite CRLF as LF: a '#!/usr/bin/env python3\\r' line makes GIMP fail to start the script.

    A checkout made on Windows with git's autocrlf setting has CRLF line endings.
    """
    content = path.read_bytes()
    if b"\r\n" in content:
        path.write_bytes(content.replace(b"\r\n", b"\n"))


def install_into(folder: Path, engine: Engine, manifest: Manifest) -> Path:
    """Copy the plug-in into `folder`/plug-ins and return the plug-in's folder."""
    plugins = folder / "plug-ins"
    try:
        plugins.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InstallError(
            f"cannot create GIMP's plug-ins folder {plugins} ({error}): check its permissions"
        ) from None
    target = plugins / PLUGIN_NAME
    copy_owned_folder(PLUGIN_SOURCE, target, manifest)
    write_engine_file(target, engine)
    shutil.copy2(CATALOGUE_PATH, target / CATALOGUE_PATH.name)
    script = target / SCRIPT_NAME
    normalise_line_endings(script)
    make_executable(script)
    return target


def install(engine: Engine, manifest: Manifest, required: bool) -> List[Path]:
    """Install the plug-in into every GIMP 3 configuration folder found and return the plug-in folders.

    When no GIMP 3 folder exists and `required` is False, print a note and return []. When
    `required` is True (the user passed --editors gimp), create GIMP's default folder instead.
    """
    folders = find_configuration_folders(required)
    if not folders:
        print(
            "- GIMP 3 not found (no GIMP/3.0 configuration folder): start GIMP 3 once, then run "
            "'python3 install.py --editors gimp' to add the plug-in"
        )
        return []
    installed = []
    recorded = list(manifest.settings.get(MANIFEST_KEY, []))
    for folder in folders:
        target = install_into(folder, engine, manifest)
        if str(target) not in recorded:
            recorded.append(str(target))
        manifest.settings[MANIFEST_KEY] = recorded
        installed.append(target)
    return installed


def uninstall(manifest: Manifest) -> List[Path]:
    """Remove the plug-in folders that earlier installs recorded; return those removed.

    Only folders carrying the installer's marker file are removed (see remove_owned_path).
    """
    removed = []
    kept: List[str] = []
    for text in manifest.settings.get(MANIFEST_KEY, []):
        target = Path(text)
        if remove_owned_path(target):
            removed.append(target)
            if text in manifest.created:
                manifest.created.remove(text)
        elif target.exists():
            print(f"- left in place (not created by install.py): {target}")
            kept.append(text)
    manifest.settings[MANIFEST_KEY] = kept
    return removed
