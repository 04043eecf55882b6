"""Quality metrics of the benchmarks, on small hand-made arrays with results worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import metrics
from benchmarks.dataset import load_trimap, load_truth, read_manifest
from benchmarks.tables import replace_section


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.float32)
    mask[top:top + side, left:left + side] = 1.0
    return mask


def test_mae_of_known_arrays():
    prediction = np.array([[0.0, 0.5], [1.0, 1.0]])
    truth = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.mae(prediction, truth) == pytest.approx(0.375)


def test_mse_is_scaled_by_1000():
    prediction = np.array([[0.0, 0.5], [1.0, 1.0]])
    truth = np.array([[0.0, 1.0], [1.0, 0.0]])
    # (0 + 0.25 + 0 + 1) / 4 = 0.3125
    assert metrics.mse(prediction, truth) == pytest.approx(312.5)


def test_sad_of_constant_offset():
    truth = np.full((100, 100), 0.2)
    prediction = truth + 0.1
    # 10,000 pixels off by 0.1: 1000, reported in thousands.
    assert metrics.sad(prediction, truth) == pytest.approx(1.0)


def test_metrics_reject_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        metrics.mae(np.zeros((3, 4)), np.zeros((4, 3)))


def test_iou_of_two_overlapping_squares():
    first = square(20, 0, 0, 10)
    second = square(20, 5, 5, 10)
    # Intersection 5 x 5 = 25, union 100 + 100 - 25 = 175.
    assert metrics.iou(first, second) == pytest.approx(25 / 175)


def test_iou_of_identical_and_empty_masks():
    mask = square(20, 3, 4, 8)
    assert metrics.iou(mask, mask) == 1.0
    assert metrics.iou(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0
    assert metrics.iou(np.zeros((5, 5)), np.ones((5, 5))) == 0.0


def test_iou_thresholds_at_one_half():
    truth = square(10, 0, 0, 5)
    below = truth * 0.49
    at = truth * 0.5
    assert metrics.iou(below, truth) == 0.0
    assert metrics.iou(at, truth) == 1.0


def test_boundary_is_the_inner_ring():
    mask = square(5, 1, 1, 3) > 0.5
    edge = metrics.boundary(mask)
    assert np.count_nonzero(edge) == 8
    assert not edge[2, 2]
    assert not edge[0].any()


def test_boundary_f_of_identical_masks():
    mask = square(60, 10, 10, 20)
    assert metrics.boundary_f(mask, mask) == 1.0


def test_boundary_f_tolerates_small_shift():
    truth = square(60, 10, 10, 20)
    assert metrics.boundary_f(np.roll(truth, 2, axis=1), truth) == 1.0


def test_boundary_f_of_square_shifted_by_five():
    truth = square(60, 10, 10, 20)
    prediction = square(60, 10, 15, 20)
    # Of the 76 outline pixels, 17 + 17 on the top and bottom rows and 4 on the near side lie
    # within 2 pixels of the other outline: precision = recall = 38 / 76.
    assert metrics.boundary_f(prediction, truth) == pytest.approx(0.5)


def test_boundary_f_with_empty_masks():
    mask = square(20, 5, 5, 5)
    empty = np.zeros((20, 20))
    assert metrics.boundary_f(empty, empty) == 1.0
    assert metrics.boundary_f(empty, mask) == 0.0
    assert metrics.boundary_f(mask, empty) == 0.0


def test_max_f_of_perfect_prediction_is_one():
    truth = square(30, 5, 5, 10)
    precision, recall = metrics.precision_recall_curve(truth, truth)
    assert metrics.max_f(precision, recall) == pytest.approx(1.0)


def test_max_f_of_constant_prediction():
    truth = np.zeros((20, 20))
    truth[:5] = 1.0
    precision, recall = metrics.precision_recall_curve(np.full((20, 20), 0.5), truth)
    # Every pixel is predicted up to level 128 (precision 0.25, recall 1), none above it.
    assert precision[128] == pytest.approx(0.25)
    assert recall[128] == 1.0
    assert precision[129] == 0.0
    assert metrics.max_f(precision, recall) == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1.0))


def test_precision_recall_curve_is_monotonic_in_recall():
    rng = np.random.default_rng(1)
    prediction = rng.random((32, 32))
    truth = (rng.random((32, 32)) > 0.5).astype(np.float32)
    _, recall = metrics.precision_recall_curve(prediction, truth)
    assert recall[0] == 1.0
    assert np.all(np.diff(recall) <= 0)


def test_precision_recall_curve_with_empty_truth():
    truth = np.zeros((10, 10))
    prediction = np.zeros((10, 10))
    prediction[0, 0] = 1.0
    precision, recall = metrics.precision_recall_curve(prediction, truth)
    # Level 0 selects every pixel; levels 1..255 select only the one false positive.
    assert precision[0] == 0.0
    assert precision[255] == 0.0
    assert recall[0] == 0.0
    perfect_precision, perfect_recall = metrics.precision_recall_curve(np.zeros((10, 10)), truth)
    assert perfect_precision[1] == 1.0
    assert perfect_recall[1] == 1.0


def test_f_measure_weights_precision():
    assert float(metrics.f_measure(1.0, 0.5)) == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))
    assert float(metrics.f_measure(0.0, 0.0)) == 0.0


def test_gradient_error_of_identical_is_zero():
    truth = square(30, 5, 5, 10) * 0.8
    assert metrics.gradient_error(truth, truth) == 0.0


def test_gradient_error_ignores_constant_offset():
    truth = square(30, 5, 5, 10) * 0.5
    assert metrics.gradient_error(truth + 0.25, truth) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sad(truth + 0.25, truth) > 0


def test_gradient_error_of_blurred_edge_is_positive():
    truth = square(30, 5, 5, 10)
    blurred = np.clip(np.roll(truth, 1, axis=0) * 0.5 + truth * 0.5, 0, 1)
    assert metrics.gradient_error(blurred, truth) > 0


def test_gradient_magnitude_of_a_ramp_is_its_slope():
    ramp = np.tile(np.arange(40, dtype=np.float64) * 0.01, (40, 1))
    magnitude = metrics.gradient_magnitude(ramp)
    # Away from the edges the Gaussian-derivative filter returns the slope, 0.01 per pixel.
    assert magnitude[20, 10:30] == pytest.approx(np.full(20, 0.01), rel=1e-3)


def test_band_mae_counts_only_the_unknown_band():
    truth = np.zeros((10, 10))
    prediction = np.ones((10, 10))
    prediction[:, 4:6] = 0.5
    trimap = np.zeros((10, 10), dtype=np.uint8)
    trimap[:, 4:6] = 128
    assert metrics.band_mae(prediction, truth, trimap) == pytest.approx(0.5)
    assert metrics.mae(prediction, truth) == pytest.approx(0.9)


def test_band_mae_without_band_is_nan():
    trimap = np.full((4, 4), 255, dtype=np.uint8)
    assert math.isnan(metrics.band_mae(np.ones((4, 4)), np.ones((4, 4)), trimap))


def test_alpha_metrics_collects_every_metric():
    truth = square(20, 4, 4, 8)
    trimap = np.where(truth > 0, 255, 0).astype(np.uint8)
    trimap[3:13, 3] = 128
    values = metrics.alpha_metrics(truth, truth, trimap)
    assert set(values) == {"mae", "sad", "mse", "grad", "band_mae"}
    assert values["mae"] == 0.0
    assert values["band_mae"] == 0.0


def test_binary_metrics_of_perfect_prediction():
    truth = square(20, 4, 4, 8)
    values = metrics.binary_metrics(truth, truth)
    assert values["mae"] == 0.0
    assert values["iou"] == 1.0
    assert values["boundary_f"] == 1.0
    assert values["max_f"] == pytest.approx(1.0)


def write_sample_folder(folder: Path) -> None:
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    Image.new("RGB", (6, 4), (200, 10, 10)).save(folder / "images" / "a.png")
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 2:5] = 255
    Image.fromarray(mask).convert("RGB").save(folder / "masks" / "a.png")
    Image.fromarray(np.full((4, 6), 128, dtype=np.uint8)).convert("P").save(folder / "masks" / "a-trimap.png")
    (folder / "manifest.csv").write_text(
        "source,id,category,gt_type,image,mask,trimap\n"
        "toy,a,red,alpha(real),images/a.png,masks/a.png,masks/a-trimap.png\n"
        "toy,b,,binary_mask,images/a.png,masks/a.png,\n",
        encoding="utf-8",
    )


def test_manifest_reader(tmp_path):
    write_sample_folder(tmp_path)
    samples = read_manifest(tmp_path)
    assert [sample.key for sample in samples] == ["toy/a", "toy/b"]
    assert samples[0].has_alpha_truth
    assert not samples[1].has_alpha_truth
    assert samples[1].trimap is None
    assert samples[1].category == "unlabelled"
    truth = load_truth(samples[0].mask)
    assert truth.shape == (4, 6)
    assert truth[1, 2] == 1.0
    assert truth[0, 0] == 0.0
    assert np.unique(load_trimap(samples[0].trimap)).tolist() == [128]


def test_manifest_reader_rejects_missing_file(tmp_path):
    write_sample_folder(tmp_path)
    (tmp_path / "masks" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png not found"):
        read_manifest(tmp_path)


def test_manifest_reader_rejects_unknown_truth(tmp_path):
    write_sample_folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("binary_mask", "scribble"), encoding="utf-8")
    with pytest.raises(ValueError, match="invalid gt_type 'scribble'"):
        read_manifest(tmp_path)


def test_replace_section_keeps_surrounding_text(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- quality:start -->\nold\n<!-- quality:end -->\noutro\n", encoding="utf-8")
    replace_section(page, "quality", "new table")
    assert page.read_text(encoding="utf-8") == "intro\n<!-- quality:start -->\nnew table\n<!-- quality:end -->\noutro\n"
    with pytest.raises(ValueError, match="no section speed"):
        replace_section(page, "speed", "x")


def test_displayed_command_hides_local_paths():
    from benchmarks.__main__ import displayed_command

    shown = displayed_command(["quality", "--data", "/home/me/set", "--json=/tmp/out.json", "--configs", "isnet-*"])
    assert shown == "python -m benchmarks quality --data DIR --json=FILE --configs 'isnet-*'"
