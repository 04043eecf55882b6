"""Read an evaluation folder: manifest.csv plus the photos, masks and trimaps it names.

manifest.csv has the columns source, id, category, gt_type, image, mask, trimap. Paths are
relative to the folder. gt_type is "binary_mask" for salient-object masks and starts with
"alpha" for real alpha mattes; trimap may be empty.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ai_remove_background.imageio import LoadedImage, load_image

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("source", "id", "category", "gt_type", "image", "mask", "trimap")
BINARY_TRUTH = "binary_mask"
ALPHA_TRUTH_PREFIX = "alpha"
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class Sample:
    source: str
    id: str
    category: str
    gt_type: str
    image: Path
    mask: Path
    trimap: Path | None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.id}"

    @property
    def has_alpha_truth(self) -> bool:
        return self.gt_type.startswith(ALPHA_TRUTH_PREFIX)


def read_manifest(folder: Path) -> list[Sample]:
    """Return the samples listed in `folder`/manifest.csv, checking that every file exists."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: --data must be a folder with a {MANIFEST_NAME}")
    samples = []
    with open(manifest, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest} lacks the column(s) {', '.join(missing)}: "
                             f"expected {', '.join(REQUIRED_COLUMNS)}")
        for line_number, row in enumerate(reader, start=2):
            gt_type = row["gt_type"].strip()
            if gt_type != BINARY_TRUTH and not gt_type.startswith(ALPHA_TRUTH_PREFIX):
                raise ValueError(f"{manifest} line {line_number}: invalid gt_type {gt_type!r}: "
                                 f"expected {BINARY_TRUTH!r} or a value starting with {ALPHA_TRUTH_PREFIX!r}")
            trimap_text = (row["trimap"] or "").strip()
            sample = Sample(
                source=row["source"].strip(),
                id=row["id"].strip(),
                category=row["category"].strip() or "unlabelled",
                gt_type=gt_type,
                image=folder / row["image"].strip(),
                mask=folder / row["mask"].strip(),
                trimap=folder / trimap_text if trimap_text else None,
            )
            for path in (sample.image, sample.mask, sample.trimap):
                if path is not None and not path.is_file():
                    raise FileNotFoundError(f"{manifest} line {line_number}: {path} not found")
            samples.append(sample)
    if not samples:
        raise ValueError(f"{manifest} lists no images")
    return samples


def load_photo(sample: Sample) -> LoadedImage:
    """Decode the photo exactly as the command line does (EXIF orientation, sRGB, alpha kept)."""
    return load_image(sample.image)


def load_truth(path: Path) -> np.ndarray:
    """Return a ground-truth mask or matte as float32 in 0..1 (8-bit and 16-bit grey, or RGB)."""
    with Image.open(path) as image:
        if image.mode in SIXTEEN_BIT_MODES:
            return np.asarray(image, dtype=np.float32) / 65535.0
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def load_trimap(path: Path) -> np.ndarray:
    """Return a trimap as uint8: 0 background, 255 foreground, anything between unknown."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))
