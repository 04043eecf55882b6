"""Clear background that the partner model marks as subject inside the subject's outline.

When two models are combined by their pixel-wise maximum, the partner (u2netp, whose output is
coarse) often fills background that the subject encloses. Examples are the gap between an arm
and the body, or the inside of a handle or a ring. The primary model (ISNet) often leaves such
gaps out. This module finds them at the models' resolution and sets the combined probability
there to 0. A region is a connected set of pixels that the combined output rates at 0.5 or more, the
primary model alone below 0.5, and whose colour is more frequent in the confident background
than in the confident subject. It is cleared only when:

- it is enclosed: it touches neither the image border nor the background that is connected to
  the border;
- the mean of its pixels' log ratios (background over subject) is at least MIN_REGION_LOG_RATIO;
- it is large and wide enough (MIN_AREA_FRACTION, MIN_RADIUS_FRACTION).

Colour alone is not enough evidence. The development set and 100 other ECSSD photos were used
to test clearing regions that both models mark as subject whenever their colour favoured the
background. At every threshold tried, this also cut holes into subjects: an eye, a flower's
centre, a butterfly on a flower. So only what the primary model already calls background is
cleared, and the step needs a second model.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from . import refine

# Probabilities below and above which a pixel trains the background and subject colour models.
CONFIDENT_BACKGROUND = 0.05
CONFIDENT_SUBJECT = 0.95
# Each colour model needs at least this fraction of the image, or nothing is cleared.
MIN_TRAINING_FRACTION = 0.01
# Colour histogram in CIELAB: bins per axis, axis ranges (covering sRGB), and the Gaussian
# smoothing of the counts in bins.
HISTOGRAM_BINS = 20
LAB_LOW = np.array([0.0, -90.0, -110.0], dtype=np.float32)
LAB_HIGH = np.array([100.0, 100.0, 100.0], dtype=np.float32)
HISTOGRAM_SMOOTHING = 1.0
# Pixels are binned through a lookup table of colours with this many bits per channel. At 6 bits
# (steps of 4 levels) the table is far finer than the histogram's bins.
LOOKUP_BITS = 6
# Added to both normalised histograms before their ratio, so an empty bin gives a finite ratio.
HISTOGRAM_FLOOR = 1e-6
# Minimum mean log-likelihood ratio (background over subject) of a region's colours: about 7.4
# times more likely in the background. On the 111 development images and 100 other ECSSD
# photos, the 6 regions that passed every other test and scored 2.2 or more were background.
# Below that they were mixed, and parts of the subject scored up to 1.7 (a rock, food on a plate).
MIN_REGION_LOG_RATIO = 2.0
# Minimum region size, as a fraction of the probability map's pixels.
MIN_AREA_FRACTION = 0.0005
# Minimum inscribed radius, as a fraction of the probability map's shorter side (10 pixels at
# ISNet's 1024 x 1024). On the development set, regions of radius 6 to 10 included strands of
# yarn that are subject.
MIN_RADIUS_FRACTION = 10 / 1024
# Width, in pixels, of the ring around a region that must not reach the outer background.
RING_PIXELS = 2

# Linear sRGB to CIE XYZ, derived from the sRGB primaries (x, y) red (0.64, 0.33), green
# (0.30, 0.60), blue (0.15, 0.06) and the D65 white point (0.3127, 0.3290), rounded to 4 digits.
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805],
                        [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]], dtype=np.float32)
# The reference white is sRGB white itself, so that grey has a = b = 0 exactly.
D65_WHITE = SRGB_TO_XYZ.sum(axis=1)


def _srgb_to_linear_table() -> np.ndarray:
    values = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


SRGB_TO_LINEAR = _srgb_to_linear_table()


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert (h, w, 3) sRGB uint8 to CIELAB (D65) float32, with L in 0..100."""
    linear = SRGB_TO_LINEAR[rgb]
    xyz = (linear @ SRGB_TO_XYZ.T) / D65_WHITE
    epsilon = (6.0 / 29.0) ** 3
    f = np.where(xyz > epsilon, np.cbrt(xyz), xyz / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _bin_table() -> np.ndarray:
    """Return the histogram bin of every colour with LOOKUP_BITS per channel, shape (n, n, n)."""
    levels = 1 << LOOKUP_BITS
    step = 256 // levels
    values = (np.arange(levels) * step + step // 2).astype(np.uint8)  # the middle of each level
    red, green, blue = np.meshgrid(values, values, values, indexing="ij")
    scaled = (srgb_to_lab(np.stack([red, green, blue], axis=-1)) - LAB_LOW) / (LAB_HIGH - LAB_LOW)
    index = np.clip((scaled * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1)
    flat = (index[..., 0] * HISTOGRAM_BINS + index[..., 1]) * HISTOGRAM_BINS + index[..., 2]
    return flat.astype(np.int32)


def _colour_bins(rgb: np.ndarray) -> np.ndarray:
    """Return each pixel's flat index into the HISTOGRAM_BINS³ CIELAB histogram."""
    shift = 8 - LOOKUP_BITS
    return _bin_table()[rgb[..., 0] >> shift, rgb[..., 1] >> shift, rgb[..., 2] >> shift]


def _colour_histogram(bins: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Return the smoothed histogram of the selected pixels' colours, normalised to sum 1."""
    shape = (HISTOGRAM_BINS,) * 3
    counts = np.bincount(bins[selected], minlength=HISTOGRAM_BINS ** 3).astype(np.float64).reshape(shape)
    smoothed = ndimage.gaussian_filter(counts, HISTOGRAM_SMOOTHING, mode="constant").ravel()
    return smoothed / max(float(smoothed.sum()), 1.0)


def background_log_ratio(rgb: np.ndarray, probability: np.ndarray) -> np.ndarray | None:
    """Return log(P(colour | background) / P(colour | subject)) per pixel, or None.

    The two colour models are trained on the pixels whose probability is confident. None means
    that either model has fewer than MIN_TRAINING_FRACTION of the pixels to learn from.
    """
    background = probability < CONFIDENT_BACKGROUND
    subject = probability > CONFIDENT_SUBJECT
    minimum = MIN_TRAINING_FRACTION * probability.size
    if background.sum() < minimum or subject.sum() < minimum:
        return None
    bins = _colour_bins(rgb)
    background_histogram = _colour_histogram(bins, background)
    subject_histogram = _colour_histogram(bins, subject)
    ratio = np.log((background_histogram + HISTOGRAM_FLOOR) / (subject_histogram + HISTOGRAM_FLOOR))
    return ratio[bins].astype(np.float32)


def _border(shape: tuple[int, int]) -> np.ndarray:
    """Return a boolean mask of the image's outermost rows and columns."""
    border = np.zeros(shape, dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    return border


def _labels_touching(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the nonzero labels that occur where `mask` is set."""
    found = np.unique(labels[mask])
    return found[found > 0]


def _outer_background(subject: np.ndarray) -> np.ndarray:
    """Return the non-subject pixels that are connected to the image border."""
    labels, _ = ndimage.label(~subject)
    return np.isin(labels, _labels_touching(labels, _border(subject.shape)))


def enclosed_background(combined: np.ndarray, primary: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Return a boolean mask of the regions that clear_enclosed_background sets to 0.

    `combined` and `primary` are probability maps of the same shape; `rgb` is the photo, uint8,
    already resized to that shape.
    """
    height, width = combined.shape
    cleared = np.zeros((height, width), dtype=bool)
    log_ratio = background_log_ratio(rgb, combined)
    if log_ratio is None:
        return cleared

    # NOTE: the subject's colour model includes the filled region itself, so a region that is
    # more than about 13 % (1 / 7.4) of the confident subject cannot reach MIN_REGION_LOG_RATIO
    # and stays, however clearly it is background.
    subject = combined >= 0.5
    candidates = subject & (primary < 0.5) & (log_ratio > 0.0)
    candidates = ndimage.binary_opening(candidates)
    labels, count = ndimage.label(candidates)
    if count == 0:
        return cleared

    # Regions that touch the image border or reach the outer background are not enclosed.
    near_outside = ndimage.binary_dilation(_outer_background(subject), iterations=RING_PIXELS)
    touching_border = _labels_touching(labels, _border(labels.shape))
    touching_outside = _labels_touching(labels, near_outside)

    flat_labels = labels.ravel()
    areas = np.bincount(flat_labels, minlength=count + 1)
    ratio_sums = np.bincount(flat_labels, weights=log_ratio.ravel(), minlength=count + 1)
    mean_ratios = ratio_sums / np.maximum(areas, 1)
    passed = (areas >= MIN_AREA_FRACTION * combined.size) & (mean_ratios >= MIN_REGION_LOG_RATIO)
    passed[0] = False  # label 0 is everything outside the candidates
    passed[touching_border] = False
    passed[touching_outside] = False

    min_radius = MIN_RADIUS_FRACTION * min(height, width)
    boxes = ndimage.find_objects(labels)
    accepted = []
    for label in np.flatnonzero(passed):
        region = np.pad(labels[boxes[label - 1]] == label, 1)
        # The largest distance to a pixel outside the region is its inscribed radius.
        if ndimage.distance_transform_edt(region).max() >= min_radius:
            accepted.append(label)
    return np.isin(labels, accepted)


def clear_enclosed_background(combined: np.ndarray, primary: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Return `combined` with the enclosed background regions (see the module docstring) set to 0.

    `combined` is the pixel-wise maximum of `primary` and the partner model's probability, both
    at the models' resolution; `rgb` is the full photo, uint8.
    """
    if combined.shape != primary.shape:
        raise ValueError(f"combined probability is {combined.shape} but primary is {primary.shape}: "
                         "resize the partner's output to the primary model's size first")
    height, width = combined.shape
    small = refine.resize_rgb(rgb, width, height)
    cleared = enclosed_background(combined, primary, small)
    if not cleared.any():
        return combined
    result = combined.copy()
    result[cleared] = 0.0
    return result
