"""Reference for hint mode: pymatting's closed-form matting on every sample that has a trimap.

Run it with a Python that has pymatting (rembg's environment has it), from the checkout:

    .venv-rembg/bin/python benchmarks/pymatting_reference.py --data DIR

It prints, per sample and on average, SAD/1000 and grad/1000 (the quality benchmark's
metrics, from benchmarks/metrics.py) and the seconds that estimate_alpha_cf took. The engine's
hint mode is the quality benchmark's `default-hint` configuration on the same trimaps.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pymatting import estimate_alpha_cf

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_metrics():
    """Import benchmarks/metrics.py by path, because the engine is not installed in this Python."""
    spec = importlib.util.spec_from_file_location("metrics", Path(__file__).with_name("metrics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_truth(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode in SIXTEEN_BIT_MODES:
            return np.asarray(image, dtype=np.float64) / 65535.0
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with manifest.csv")
    arguments = parser.parse_args()
    metrics = load_metrics()
    rows = []
    with open(arguments.data / "manifest.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["trimap"].strip() and row["gt_type"].startswith("alpha"):
                rows.append(row)
    scores = []
    for row in rows:
        with Image.open(arguments.data / row["image"]) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        with Image.open(arguments.data / row["trimap"]) as image:
            trimap = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        truth = load_truth(arguments.data / row["mask"])
        started = time.perf_counter()
        alpha = estimate_alpha_cf(rgb, trimap)
        seconds = time.perf_counter() - started
        scores.append((metrics.sad(alpha, truth), metrics.gradient_error(alpha, truth), seconds))
        print(f"{row['source']}/{row['id']}: SAD/1000 {scores[-1][0]:.3f}, grad/1000 {scores[-1][1]:.4f}, "
              f"{seconds:.2f} s")
    mean = np.mean(scores, axis=0)
    print(f"mean of {len(scores)}: SAD/1000 {mean[0]:.3f}, grad/1000 {mean[1]:.4f}, {mean[2]:.2f} s "
          f"(median {np.median([score[2] for score in scores]):.2f} s)")


if __name__ == "__main__":
    main()
