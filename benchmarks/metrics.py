"""Cutout quality metrics: every function takes float arrays in 0..1 of the same 2-D shape.

Binary ground truth (salient-object data sets such as ECSSD): MAE, IoU, boundary F and maxF.
Alpha ground truth (alphamatting.com): MAE, SAD, MSE, gradient error, and MAE inside the
trimap's unknown band. Errors are computed over the whole image unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Weight of precision against recall in the F-measure of salient-object detection
# (Achanta et al., CVPR 2009): beta squared = 0.3 favours precision.
F_BETA_SQUARED = 0.3
# Gaussian-derivative scale of the gradient error, as in the alphamatting.com benchmark
# (Rhemann et al., CVPR 2009).
GRADIENT_SIGMA = 1.4
# Threshold levels of the precision-recall curve: prediction >= level / 255.
CURVE_LEVELS = 256


def _check_pair(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape or prediction.ndim != 2:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} must be 2-D arrays of one shape")


def mae(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error."""
    _check_pair(prediction, truth)
    return float(np.mean(np.abs(prediction.astype(np.float64) - truth)))


def sad(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Sum of absolute differences, in thousands (the unit alpha-matting papers report)."""
    _check_pair(prediction, truth)
    return float(np.sum(np.abs(prediction.astype(np.float64) - truth)) / 1000.0)


def mse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error times 1000."""
    _check_pair(prediction, truth)
    return float(np.mean((prediction.astype(np.float64) - truth) ** 2) * 1000.0)


def gradient_magnitude(values: np.ndarray, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """Gradient magnitude from first-order Gaussian-derivative filters of scale `sigma` pixels."""
    values = values.astype(np.float64)
    along_rows = ndimage.gaussian_filter(values, sigma, order=(1, 0), mode="nearest")
    along_columns = ndimage.gaussian_filter(values, sigma, order=(0, 1), mode="nearest")
    return np.hypot(along_rows, along_columns)


def gradient_error(prediction: np.ndarray, truth: np.ndarray, sigma: float = GRADIENT_SIGMA) -> float:
    """Sum of squared differences of the gradient magnitudes, in thousands."""
    _check_pair(prediction, truth)
    difference = gradient_magnitude(prediction, sigma) - gradient_magnitude(truth, sigma)
    return float(np.sum(difference**2) / 1000.0)


def unknown_band(trimap: np.ndarray) -> np.ndarray:
    """Boolean mask of the trimap's unknown pixels: neither 0 (background) nor 255 (foreground)."""
    return (trimap > 0) & (trimap < 255)


def band_mae(prediction: np.ndarray, truth: np.ndarray, trimap: np.ndarray) -> float:
    """Mean absolute error over the trimap's unknown band (uint8 trimap); NaN if it has none."""
    _check_pair(prediction, truth)
    if trimap.shape != truth.shape:
        raise ValueError(f"trimap {trimap.shape} must have the shape of the truth {truth.shape}")
    band = unknown_band(trimap)
    if not band.any():
        return float("nan")
    return float(np.mean(np.abs(prediction[band].astype(np.float64) - truth[band])))


def iou(prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the two masks binarised at `threshold`; 1 when both are empty."""
    _check_pair(prediction, truth)
    predicted = prediction >= threshold
    actual = truth >= threshold
    union = np.count_nonzero(predicted | actual)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(predicted & actual) / union)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean mask that touch a pixel outside it (4-neighbourhood, image edge excluded)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=1)
    return mask & ~eroded


def boundary_f(prediction: np.ndarray, truth: np.ndarray, tolerance: float = 2.0, threshold: float = 0.5) -> float:
    """F1 of the outlines of both masks binarised at `threshold`.

    An outline pixel counts as matched when the other mask's outline is within `tolerance`
    pixels (Euclidean). Precision is over the predicted outline, recall over the true one.
    Two masks without any outline score 1; one without an outline against one with scores 0.
    """
    _check_pair(prediction, truth)
    predicted_edge = boundary(prediction >= threshold)
    true_edge = boundary(truth >= threshold)
    predicted_count = np.count_nonzero(predicted_edge)
    true_count = np.count_nonzero(true_edge)
    if predicted_count == 0 and true_count == 0:
        return 1.0
    if predicted_count == 0 or true_count == 0:
        return 0.0
    distance_to_true = ndimage.distance_transform_edt(~true_edge)
    distance_to_predicted = ndimage.distance_transform_edt(~predicted_edge)
    precision = np.count_nonzero(distance_to_true[predicted_edge] <= tolerance) / predicted_count
    recall = np.count_nonzero(distance_to_predicted[true_edge] <= tolerance) / true_count
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def precision_recall_curve(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of `prediction >= level / 255` for level 0..255 against truth >= 0.5.

    The prediction is quantised to 8 bits first, as a saved mask would be. Where nothing is
    predicted, precision is 0; against an empty truth both are 1 where nothing is predicted
    and 0 elsewhere.
    """
    _check_pair(prediction, truth)
    levels = np.rint(np.clip(prediction, 0.0, 1.0) * 255.0).astype(np.intp)
    actual = truth >= 0.5
    positives_per_level = np.bincount(levels[actual], minlength=CURVE_LEVELS)
    negatives_per_level = np.bincount(levels[~actual], minlength=CURVE_LEVELS)
    # Pixels at or above each level: reversed cumulative sums.
    true_positives = np.cumsum(positives_per_level[::-1])[::-1].astype(np.float64)
    false_positives = np.cumsum(negatives_per_level[::-1])[::-1].astype(np.float64)
    predicted = true_positives + false_positives
    actual_count = float(np.count_nonzero(actual))
    if actual_count == 0:
        empty = (predicted == 0).astype(np.float64)
        return empty, empty.copy()
    precision = np.divide(true_positives, predicted, out=np.zeros(CURVE_LEVELS), where=predicted > 0)
    recall = true_positives / actual_count
    return precision, recall


def f_measure(precision: np.ndarray | float, recall: np.ndarray | float,
              beta_squared: float = F_BETA_SQUARED) -> np.ndarray:
    """Weighted F-measure, 0 where precision and recall are both 0."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    denominator = beta_squared * precision + recall
    numerator = (1.0 + beta_squared) * precision * recall
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def max_f(precision: np.ndarray, recall: np.ndarray, beta_squared: float = F_BETA_SQUARED) -> float:
    """Maximum F-measure over the threshold levels of one precision-recall curve.

    For a data set, pass the mean curves over its images (the usual protocol of salient-object
    benchmarks), not the mean of each image's maximum.
    """
    return float(np.max(f_measure(precision, recall, beta_squared)))


def binary_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    """Compute the binary-truth metrics of one image, plus its precision-recall curve for data-set maxF."""
    precision, recall = precision_recall_curve(prediction, truth)
    return {
        "mae": mae(prediction, truth),
        "iou": iou(prediction, truth),
        "boundary_f": boundary_f(prediction, truth),
        "max_f": max_f(precision, recall),
        "precision_curve": precision,
        "recall_curve": recall,
    }


def alpha_metrics(prediction: np.ndarray, truth: np.ndarray, trimap: np.ndarray | None) -> dict[str, object]:
    """Compute the alpha-truth metrics of one image; band_mae is NaN without a trimap."""
    return {
        "mae": mae(prediction, truth),
        "sad": sad(prediction, truth),
        "mse": mse(prediction, truth),
        "grad": gradient_error(prediction, truth),
        "band_mae": float("nan") if trimap is None else band_mae(prediction, truth, trimap),
    }
