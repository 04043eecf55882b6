"""Closed-form matting and the hint-mask mode, on synthetic composites with a known alpha."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from ai_remove_background import matting
from ai_remove_background.pipeline import Options, remove_background

SIZE = 64


def synthetic_composite() -> tuple[np.ndarray, np.ndarray]:
    """Return (rgb uint8, true alpha 0..1): a red subject over blue, with a soft vertical edge."""
    columns = np.arange(SIZE, dtype=np.float64)
    ramp = np.clip((columns - 26.0) / 12.0, 0.0, 1.0)  # 0 left of x=26, 1 right of x=38
    alpha = np.tile(ramp, (SIZE, 1))
    foreground = np.array([220.0, 40.0, 30.0])
    background = np.array([20.0, 60.0, 200.0])
    rgb = alpha[:, :, np.newaxis] * foreground + (1.0 - alpha[:, :, np.newaxis]) * background
    return np.rint(rgb).astype(np.uint8), alpha


def band_trimap(alpha: np.ndarray) -> np.ndarray:
    trimap = np.full(alpha.shape, 128, dtype=np.uint8)
    trimap[:, :20] = 0
    trimap[:, 44:] = 255
    return trimap


def test_solve_alpha_recovers_soft_edge():
    rgb, truth = synthetic_composite()
    alpha = matting.solve_alpha(rgb, band_trimap(truth))
    band = slice(20, 44)
    assert np.abs(alpha[:, band] - truth[:, band]).mean() < 0.02
    assert np.abs(alpha - truth).max() < 0.08


def test_solve_alpha_keeps_fixed_pixels():
    rgb, truth = synthetic_composite()
    trimap = band_trimap(truth)
    alpha = matting.solve_alpha(rgb, trimap)
    assert (alpha[trimap == 0] == 0).all()
    assert (alpha[trimap == 255] == 1).all()


def test_solve_alpha_reduced_scale_path(monkeypatch):
    rgb, truth = synthetic_composite()
    monkeypatch.setattr(matting, "MAX_UNKNOWN_PIXELS", 400)
    alpha = matting.solve_alpha(rgb, band_trimap(truth))
    band = slice(20, 44)
    assert alpha.shape == truth.shape
    assert np.abs(alpha[:, band] - truth[:, band]).mean() < 0.05


def test_solve_alpha_one_sided_hint_keeps_values():
    rgb, _ = synthetic_composite()
    trimap = np.full((SIZE, SIZE), 128, dtype=np.uint8)
    trimap[:, :10] = 0
    alpha = matting.solve_alpha(rgb, trimap)
    assert np.allclose(alpha[:, 10:], 128 / 255)


def test_pipeline_hint_mask_mode():
    rgb, truth = synthetic_composite()
    trimap = band_trimap(truth)
    result = remove_background(rgb, None, Options(), hint=trimap)
    expected = np.rint(truth * 255)
    assert result.mask.shape == (SIZE, SIZE)
    assert np.abs(result.mask[:, 20:44] - expected[:, 20:44]).mean() < 6
    assert result.provider == ""  # the model did not run


def test_cli_hint_mask(tmp_path):
    rgb, truth = synthetic_composite()
    photo = tmp_path / "photo.png"
    hint = tmp_path / "hint.png"
    output = tmp_path / "mask.png"
    Image.fromarray(rgb).save(photo)
    Image.fromarray(band_trimap(truth)).save(hint)
    completed = subprocess.run(
        [sys.executable, "-m", "ai_remove_background.cli", str(photo), "--mask", "--hint-mask", str(hint),
         "-o", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    mask = np.asarray(Image.open(output))
    assert np.abs(mask[:, 20:44] - np.rint(truth[:, 20:44] * 255)).mean() < 6
