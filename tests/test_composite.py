"""Foreground colour estimation: no fringe of the old background on a new one."""

from __future__ import annotations

import numpy as np

from ai_remove_background.composite import estimate_foreground, over_background

SIZE = 64
RED = np.array([220.0, 40.0, 30.0])
BLUE = np.array([20.0, 60.0, 200.0])


def soft_edge_composite() -> tuple[np.ndarray, np.ndarray]:
    ramp = np.clip((np.arange(SIZE, dtype=np.float64) - 26.0) / 12.0, 0.0, 1.0)
    alpha = np.tile(ramp, (SIZE, 1))
    rgb = alpha[:, :, np.newaxis] * RED + (1.0 - alpha[:, :, np.newaxis]) * BLUE
    return np.rint(rgb).astype(np.uint8), np.rint(alpha * 255).astype(np.uint8)


def test_foreground_removes_background_colour():
    rgb, mask = soft_edge_composite()
    foreground = estimate_foreground(rgb, mask).astype(np.float64)
    band = (mask > 25) & (mask < 230)
    photo_error = np.abs(rgb.astype(np.float64)[band] - RED).mean()
    estimated_error = np.abs(foreground[band] - RED).mean()
    assert estimated_error < 12
    assert estimated_error < photo_error / 4


def test_foreground_keeps_solid_pixels():
    rgb, mask = soft_edge_composite()
    foreground = estimate_foreground(rgb, mask)
    solid = (mask == 0) | (mask == 255)
    assert (foreground[solid] == rgb[solid]).all()


def test_new_background_has_no_blue_fringe():
    rgb, mask = soft_edge_composite()
    white = np.full_like(rgb, 255)
    naive = over_background(rgb, mask, white).astype(np.float64)
    cleaned = over_background(estimate_foreground(rgb, mask), mask, white).astype(np.float64)
    band = (mask > 25) & (mask < 230)
    # Blue minus red measures the old background's tint over white.
    naive_tint = (naive[band, 2] - naive[band, 0]).mean()
    cleaned_tint = (cleaned[band, 2] - cleaned[band, 0]).mean()
    assert cleaned_tint < naive_tint - 40


def test_foreground_strips_match_whole_image(monkeypatch):
    from ai_remove_background import composite

    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(300, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, size=(300, 40), dtype=np.uint8)
    mask[:60] = 0  # a strip without edge pixels is skipped
    whole = composite.estimate_foreground(rgb, mask)
    monkeypatch.setattr(composite, "FOREGROUND_STRIP_ROWS", 50)
    stripped = composite.estimate_foreground(rgb, mask)
    assert np.abs(whole.astype(int) - stripped.astype(int)).max() <= 1


def test_foreground_column_crop_matches_whole_image(monkeypatch):
    from ai_remove_background import composite

    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, size=(120, 400, 3), dtype=np.uint8)
    mask = np.zeros((120, 400), dtype=np.uint8)
    mask[:, 250:] = 255
    mask[:, 240:250] = rng.integers(1, 255, size=(120, 10), dtype=np.uint8)  # edge columns only
    cropped = composite.estimate_foreground(rgb, mask)
    reference = composite._estimate_foreground_block(rgb, mask)
    edge = (mask > 0) & (mask < 255)
    expected = np.where(edge[:, :, np.newaxis], np.rint(reference * 255).astype(np.uint8), rgb)
    assert np.abs(cropped.astype(int) - expected.astype(int)).max() <= 1
