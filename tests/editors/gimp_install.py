"""Install the GIMP plug-in the way install.py does, into the folder named by GIMP3_DIRECTORY.

Run inside the editor chroot with its python3, so that the paths written into engine.json are
the chroot's paths:

    GIMP3_DIRECTORY=DIR python3 tests/editors/gimp_install.py ENGINE_PYTHON MODELS_DIR MANIFEST

Prints the installed plug-in folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT))

from installer import gimp  # noqa: E402
from installer.common import Engine, Manifest  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    engine_python, models_dir, manifest_path = argv
    manifest = Manifest.load(Path(manifest_path))
    installed = gimp.install(
        Engine(python=Path(engine_python), models_dir=Path(models_dir)), manifest, required=True
    )
    manifest.save()
    for folder in installed:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
