"""A 100-megapixel photo stays within the stated memory budget, and larger ones are rejected clearly."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHECKOUT = Path(__file__).resolve().parent.parent
# The README states this budget for --mask on a 100-megapixel photo (measured peak: 3.2 GB).
MASK_MEMORY_BUDGET_BYTES = 4 * 1024**3
SIDE = 10_000  # pixels: 100 megapixels


@pytest.fixture(scope="module")
def huge_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "huge.jpg"
    with Image.open(CHECKOUT / "samples" / "astronaut.jpg") as photo:
        photo.resize((SIDE, SIDE), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def test_100_megapixel_mask_within_budget(huge_photo: Path, tmp_path: Path) -> None:
    output = tmp_path / "mask.png"
    # A fresh interpreter measures the CLI's own peak; ru_maxrss of children is in KiB on Linux.
    measure = (
        "import resource, subprocess, sys\n"
        "code = subprocess.call([sys.executable, '-m', 'ai_remove_background.cli'] + sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", measure, str(huge_photo), "--mask", "-o", str(output)],
                            capture_output=True, text=True, timeout=1200)

    assert result.returncode == 0, result.stderr
    peak_bytes = int(result.stdout.strip().splitlines()[-1])
    assert peak_bytes <= MASK_MEMORY_BUDGET_BYTES
    with Image.open(output) as mask_image:
        assert mask_image.size == (SIDE, SIDE)
        mask = np.asarray(mask_image)
    assert mask[5000, 5000] >= 250  # the astronaut's chest, scaled up
    assert mask[200, 9800] <= 5  # the top right corner is background


def test_over_limit_rejected_clearly(huge_photo: Path, tmp_path: Path) -> None:
    output = tmp_path / "mask.png"
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", str(huge_photo), "--mask",
                             "--max-megapixels", "50", "-o", str(output)],
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "100 megapixels" in result.stderr
    assert "--max-megapixels" in result.stderr
    assert not output.exists()
