"""A trimap of the astronaut sample, the hint that the editors' "refine from my mask" tests paint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CHECKOUT = Path(__file__).resolve().parents[2]
REFERENCE_MASK = CHECKOUT / "tests" / "data" / "astronaut_reference_mask.png"
# Width of the unknown band on each side of the reference mask's edge, in pixels.
BAND_PIXELS = 6
UNKNOWN = 128


def astronaut_trimap() -> np.ndarray:
    """Return 255 well inside the subject, 0 well outside it, and UNKNOWN in a band along the edge."""
    with Image.open(REFERENCE_MASK) as image:
        subject = np.asarray(image.convert("L")) >= 128
    trimap = np.full(subject.shape, UNKNOWN, dtype=np.uint8)
    trimap[ndimage.binary_erosion(subject, iterations=BAND_PIXELS)] = 255
    trimap[ndimage.binary_erosion(~subject, iterations=BAND_PIXELS, border_value=1)] = 0
    return trimap


def write_astronaut_trimap(path: Path) -> None:
    Image.fromarray(astronaut_trimap()).save(path)
