"""Put the cut-out subject on transparency, a colour, another image or its own blurred background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps
from scipy import ndimage

from .errors import UserError
from .imageio import load_image

# Blur of the "blur" background: standard deviation as a fraction of the photo's longer side.
BACKGROUND_BLUR_FRACTION = 0.015
MINIMUM_WEIGHT = 1e-3


# Box radii, in pixels, of the two passes of foreground estimation: a wide pass for the colour
# far inside the subject and background, then a narrow one for local detail.
FOREGROUND_RADII = (90, 6)
FOREGROUND_STRIP_ROWS = 1024


def _box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    size = [2 * radius + 1, 2 * radius + 1] + [1] * (values.ndim - 2)
    return ndimage.uniform_filter(values, size=size, mode="nearest")


def _estimate_foreground_block(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the estimated foreground (float32, 0..1) of one block of rows."""
    alpha = mask.astype(np.float32)[:, :, np.newaxis] / 255.0
    image = rgb.astype(np.float32) / 255.0
    foreground = image.copy()
    background = image.copy()
    for radius in FOREGROUND_RADII:
        blurred_alpha = _box_blur(alpha, radius)
        blurred_foreground = _box_blur(foreground * alpha, radius) / np.maximum(blurred_alpha, 1e-5)
        blurred_background = _box_blur(background * (1.0 - alpha), radius) / np.maximum(1.0 - blurred_alpha, 1e-5)
        residual = image - alpha * blurred_foreground - (1.0 - alpha) * blurred_background
        foreground = np.clip(blurred_foreground + alpha * residual, 0.0, 1.0)
        background = np.clip(blurred_background + (1.0 - alpha) * residual, 0.0, 1.0)
    return foreground


def estimate_foreground(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the subject's own colours, with the old background's colour removed at the edge.

    Blur-fusion foreground estimation (Germer, Uelwer, Conrad and Harmeling, "Fast Multi-Level
    Foreground Estimation", 2020): each pass estimates smooth foreground and background colours
    from their alpha-weighted neighbourhoods, then corrects the foreground so that it composites
    back to the photo. Pixels with alpha 0 or 255 keep the photo's colours.

    Rows are processed in strips that overlap by the sum of the passes' radii. The result
    therefore equals a whole-image pass while memory stays bounded. Strips without edge pixels
    are skipped.
    """
    result = rgb.copy()
    edge = (mask > 0) & (mask < 255)
    edge_rows = edge.any(axis=1)
    overlap = sum(FOREGROUND_RADII)
    height, width = mask.shape
    for top in range(0, height, FOREGROUND_STRIP_ROWS):
        bottom = min(top + FOREGROUND_STRIP_ROWS, height)
        if not edge_rows[top:bottom].any():
            continue
        # Only the columns around this strip's edge pixels are computed, with the same overlap.
        columns = np.flatnonzero(edge[top:bottom].any(axis=0))
        left, right = max(0, columns[0] - overlap), min(width, columns[-1] + 1 + overlap)
        context_top, context_bottom = max(0, top - overlap), min(height, bottom + overlap)
        foreground = _estimate_foreground_block(rgb[context_top:context_bottom, left:right],
                                                mask[context_top:context_bottom, left:right])
        strip = foreground[top - context_top:bottom - context_top]
        estimated = np.rint(strip * 255.0).astype(np.uint8)
        strip_edge = edge[top:bottom, left:right, np.newaxis]
        result[top:bottom, left:right] = np.where(strip_edge, estimated, rgb[top:bottom, left:right])
    return result


def cutout(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA uint8: the photo's colours with the mask as alpha."""
    return np.dstack([rgb, mask])


def parse_colour(text: str) -> tuple[int, int, int]:
    try:
        red, green, blue = ImageColor.getrgb(text)[:3]
    except ValueError:
        raise UserError(
            f"invalid background {text!r}: give a colour ('white', '#20a0ff', 'rgb(32,160,255)'), "
            "an image file, or 'blur'"
        ) from None
    return red, green, blue


def blurred_background(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blur the photo's background, keeping the subject's colours out of the blur.

    A normalised convolution: blur(colour x background weight) / blur(background weight), so the
    subject does not bleed into the blurred background around its edge.
    """
    sigma = max(1.0, BACKGROUND_BLUR_FRACTION * max(rgb.shape[:2]))
    weight = 1.0 - mask.astype(np.float32) / 255.0
    blurred_weight = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    if float(blurred_weight.max()) < MINIMUM_WEIGHT:
        # The subject fills the photo: blur everything rather than divide by nothing.
        weight = np.ones_like(weight)
        blurred_weight = np.ones_like(weight)
    channels = []
    for channel in range(3):
        numerator = ndimage.gaussian_filter(rgb[:, :, channel].astype(np.float32) * weight, sigma, mode="nearest")
        channels.append(numerator / np.maximum(blurred_weight, MINIMUM_WEIGHT))
    return np.clip(np.rint(np.dstack(channels)), 0, 255).astype(np.uint8)


def image_background(path: str, width: int, height: int) -> np.ndarray:
    """Read an image file and scale and centre-crop it to cover width x height.

    The file is read like an input photo, so 16-bit, CMYK and ICC-tagged files give sRGB colours.
    """
    try:
        loaded = load_image(Path(path))
    except UserError as error:
        raise UserError(f"background image {path}: {error}") from None
    fitted = ImageOps.fit(Image.fromarray(loaded.rgb), (width, height), Image.Resampling.LANCZOS)
    return np.asarray(fitted)


def over_background(rgb: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """RGB uint8: the subject composited over `background` (same size) with the mask as alpha."""
    alpha = mask.astype(np.float32)[:, :, np.newaxis] / 255.0
    blended = rgb.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def make_background(spec: str, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Build the background named by --background: 'blur', an existing image file, or a colour."""
    height, width = mask.shape
    if spec == "blur":
        return blurred_background(rgb, mask)
    if Path(spec).is_file():
        return image_background(spec, width, height)
    if Path(spec).suffix.lower() in Image.registered_extensions():
        raise UserError(f"background image {spec} not found: check the path")
    colour = parse_colour(spec)
    return np.broadcast_to(np.asarray(colour, dtype=np.uint8), (height, width, 3))
