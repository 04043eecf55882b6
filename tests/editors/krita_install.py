"""Install the Krita plug-in the way install.py does, for the HOME this process runs with.

Run inside the editor chroot with its python3, so that the paths written into engine.json are
the chroot's paths:

    HOME=DIR python3 tests/editors/krita_install.py ENGINE_PYTHON MODELS_DIR MANIFEST [--uninstall]

Prints the installed (or removed) plug-in folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT))

from installer import krita  # noqa: E402
from installer.common import Engine, Manifest  # noqa: E402


def main(argv: list[str]) -> int:
    uninstall = "--uninstall" in argv
    arguments = [argument for argument in argv if argument != "--uninstall"]
    if len(arguments) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    engine_python, models_dir, manifest_path = arguments
    manifest = Manifest.load(Path(manifest_path))
    if uninstall:
        folders = krita.uninstall(manifest)
    else:
        engine = Engine(python=Path(engine_python), models_dir=Path(models_dir))
        folders = krita.install(engine, manifest, required=True)
    manifest.save()
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
