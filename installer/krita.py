"""Install the Krita plug-in into Krita's per-user folders (standard library only, Python 3.9+).

Krita loads Python plug-ins from `pykrita/` in its per-user data folder and runs only those
enabled in kritarc (`[python]` `enable_NAME=true`). This module copies the plug-in there,
writes engine.json beside it, installs its .action file (so users can bind a shortcut) and
enables it, recording every change in the manifest so that uninstall reverts exactly that.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    CHECKOUT,
    Engine,
    InstallError,
    Manifest,
    copy_owned_folder,
    remove_owned_path,
    write_engine_file,
)

PLUGIN_NAME = "ai_remove_background"
SOURCE_DIR = CHECKOUT / "krita_plugin"
DESKTOP_FILE = f"{PLUGIN_NAME}.desktop"
ACTION_FILE = f"{PLUGIN_NAME}.action"
SETTINGS_KEY = "krita"
KRITARC_SECTION = "python"
KRITARC_KEY = f"enable_{PLUGIN_NAME}"
FLATPAK_APP = Path(".var") / "app" / "org.kde.krita"


@dataclass
class KritaLocation:
    """One Krita installation's per-user folders."""

    label: str
    data_dir: Path  # contains pykrita/ and actions/
    kritarc: Path
    found: bool


def krita_locations(
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
) -> list[KritaLocation]:
    """Return Krita's per-user folders on this system, each marked found or not.

    Linux: ~/.local/share/krita (also used by the AppImage) and ~/.config/kritarc, plus the
    Flatpak's folders under ~/.var/app/org.kde.krita when that folder exists. Windows:
    %APPDATA%\\krita and %LOCALAPPDATA%\\kritarc. macOS: ~/Library/Application Support/krita and
    ~/Library/Preferences/kritarc. A location is found when its data folder or its kritarc
    exists, or (for the main location) when a krita executable is on PATH.
    """
    home = home or Path.home()
    environ = os.environ if environ is None else environ
    platform = platform or sys.platform
    on_path = shutil.which("krita", path=environ.get("PATH")) is not None

    if platform == "win32":
        appdata = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
        local_appdata = Path(environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        main = ("Krita", appdata / "krita", local_appdata / "kritarc")
    elif platform == "darwin":
        main = ("Krita", home / "Library" / "Application Support" / "krita",
                home / "Library" / "Preferences" / "kritarc")
    else:
        data_home = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        main = ("Krita", data_home / "krita", config_home / "kritarc")

    label, data_dir, kritarc = main
    locations = [KritaLocation(label, data_dir, kritarc, data_dir.is_dir() or kritarc.is_file() or on_path)]
    flatpak = home / FLATPAK_APP
    if platform.startswith("linux") and flatpak.is_dir():
        locations.append(KritaLocation("Krita (Flatpak)", flatpak / "data" / "krita", flatpak / "config" / "kritarc", True))
    return locations


# ----------------------------------------------------------------------------- kritarc editing
def _split_lines(text: str) -> tuple[list[str], str]:
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.splitlines(keepends=True), newline


def _section_range(lines: list[str], section: str) -> tuple[int, int] | None:
    """Return (header index, end index) of an INI section, where end is the next header or the end."""
    header = f"[{section}]"
    for index, line in enumerate(lines):
        if line.strip() == header:
            end = index + 1
            while end < len(lines) and not lines[end].lstrip().startswith("["):
                end += 1
            return index, end
    return None


def _key_of(line: str) -> str:
    return line.split("=", 1)[0].strip() if "=" in line else ""


def set_ini_value(text: str, section: str, key: str, value: str) -> tuple[str, str | None, bool]:
    """Set `key=value` in `[section]`, keeping every other line as it is.

    Returns the new text, the key's previous value (None when it was absent) and whether the
    section had to be added.
    """
    lines, newline = _split_lines(text)
    found = _section_range(lines, section)
    if found is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if lines and lines[-1].strip():
            lines.append(newline)
        lines += [f"[{section}]{newline}", f"{key}={value}{newline}"]
        return "".join(lines), None, True

    start, end = found
    for index in range(start + 1, end):
        if _key_of(lines[index]) == key:
            previous = lines[index].split("=", 1)[1].rstrip("\r\n")
            lines[index] = f"{key}={value}{newline}"
            return "".join(lines), previous, False

    insert_at = end
    while insert_at > start + 1 and not lines[insert_at - 1].strip():
        insert_at -= 1
    if not lines[insert_at - 1].endswith(("\n", "\r")):
        lines[insert_at - 1] += newline
    lines.insert(insert_at, f"{key}={value}{newline}")
    return "".join(lines), None, False


def revert_ini_value(text: str, section: str, key: str, previous: str | None, section_added: bool) -> str:
    """Undo set_ini_value: restore the previous value, or remove the key (and the section we added)."""
    lines, newline = _split_lines(text)
    found = _section_range(lines, section)
    if found is None:
        return text
    start, end = found
    for index in range(start + 1, end):
        if _key_of(lines[index]) == key:
            if previous is not None:
                lines[index] = f"{key}={previous}{newline}"
            else:
                del lines[index]
                end -= 1
            break
    else:
        return text
    if previous is None and section_added and not any(line.strip() for line in lines[start + 1:end]):
        del lines[start:end]
        if start > 0 and start == len(lines) and not lines[start - 1].strip():
            del lines[start - 1]
    return "".join(lines)


def _read_text(path: Path) -> str:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".ai-remove-background.tmp")
    temporary.write_bytes(text.encode("utf-8", "surrogateescape"))
    if path.exists():
        shutil.copymode(path, temporary)
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- install
def _make_folders(folder: Path, created: list[str]) -> None:
    """Create `folder` and its missing parents, recording each one created."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(str(path))


def _copy_owned_file(source: Path, target: Path, manifest: Manifest) -> None:
    if (target.exists() or target.is_symlink()) and str(target) not in manifest.created:
        raise InstallError(
            f"{target} exists and was not created by this installer: move it away, then run install.py again"
        )
    shutil.copyfile(source, target)
    manifest.record(target)


def _enable_in_kritarc(kritarc: Path, record: dict[str, Any]) -> None:
    changes = record.setdefault("kritarc", {})
    existed = kritarc.is_file()
    text = _read_text(kritarc) if existed else ""
    new_text, previous, section_added = set_ini_value(text, KRITARC_SECTION, KRITARC_KEY, "true")
    if str(kritarc) not in changes:
        # Only the first install's state counts: later runs find our own "true" there.
        changes[str(kritarc)] = {"previous": previous, "section_added": section_added, "file_created": not existed}
    if new_text != text:
        _make_folders(kritarc.parent, record.setdefault("folders_created", []))
        _write_text(kritarc, new_text)


def install(engine: Engine, manifest: Manifest, required: bool) -> list[Path]:
    """Install the plug-in for every Krita found, and return the plug-in folders written."""
    targets = [location for location in krita_locations() if location.found]
    if not targets:
        main = krita_locations()[0]
        message = (f"Krita was not found (no {main.data_dir}, no {main.kritarc}, no krita on PATH): "
                   "install Krita 5.2 or newer and start it once, then run install.py --editors krita")
        if required:
            raise InstallError(message)
        print(f"- note: {message}")
        return []

    record = manifest.settings.setdefault(SETTINGS_KEY, {})
    folders_created: list[str] = record.setdefault("folders_created", [])
    installed = []
    for location in targets:
        pykrita = location.data_dir / "pykrita"
        actions = location.data_dir / "actions"
        _make_folders(pykrita, folders_created)
        _make_folders(actions, folders_created)

        plugin_dir = pykrita / PLUGIN_NAME
        copy_owned_folder(SOURCE_DIR / PLUGIN_NAME, plugin_dir, manifest)
        write_engine_file(plugin_dir, engine)
        _copy_owned_file(SOURCE_DIR / DESKTOP_FILE, pykrita / DESKTOP_FILE, manifest)
        _copy_owned_file(SOURCE_DIR / ACTION_FILE, actions / ACTION_FILE, manifest)
        plugins = record.setdefault("plugin_dirs", [])
        if str(plugin_dir) not in plugins:
            plugins.append(str(plugin_dir))
        record.setdefault("files", [])
        for path in (pykrita / DESKTOP_FILE, actions / ACTION_FILE):
            if str(path) not in record["files"]:
                record["files"].append(str(path))
        _enable_in_kritarc(location.kritarc, record)
        manifest.save()
        installed.append(plugin_dir)
    print("- Krita: restart Krita, then use Filter > AI Remove Background")
    return installed


# ----------------------------------------------------------------------------- uninstall
def uninstall(manifest: Manifest) -> list[Path]:
    """Remove what install() recorded, revert its kritarc lines and return the plug-in folders removed."""
    record = manifest.settings.get(SETTINGS_KEY)
    if not record:
        return []
    removed = []
    for text in record.get("plugin_dirs", []):
        if remove_owned_path(Path(text)):
            removed.append(Path(text))
    for text in record.get("files", []):
        remove_owned_path(Path(text))

    for path_text, change in record.get("kritarc", {}).items():
        kritarc = Path(path_text)
        if not kritarc.is_file():
            continue
        text = _read_text(kritarc)
        new_text = revert_ini_value(text, KRITARC_SECTION, KRITARC_KEY, change["previous"], change["section_added"])
        if change.get("file_created") and not new_text.strip():
            kritarc.unlink()
        elif new_text != text:
            _write_text(kritarc, new_text)

    for folder in reversed(record.get("folders_created", [])):
        try:
            Path(folder).rmdir()  # only when empty: Krita or the user may have put files there
        except OSError:
            pass

    removed_paths = {str(path) for path in removed} | set(record.get("files", []))
    manifest.created = [path for path in manifest.created if path not in removed_paths]
    del manifest.settings[SETTINGS_KEY]
    manifest.save()
    return removed
