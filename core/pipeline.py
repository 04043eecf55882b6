"""The one entry point: a photo's pixels in, a full-resolution 8-bit mask out."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from . import holes, matting, refine
from .catalogue import get_model, installed_model_names
from .errors import UserError
from .session import load_model, predict

log = logging.getLogger(__name__)

# Colour under transparent input pixels when the model looks at them: a neutral mid grey, so
# that whatever colour a transparent pixel happens to store cannot look like a subject.
TRANSPARENT_FILL = 128.0

MAX_GROW_PIXELS = 1000
# More threads than this only slows onnxruntime's start-up, and very large counts hang it.
MAX_THREADS = 256

# Hint mode: unknown pixels farther than this from every painted pixel are decided by the model
# where its probability is at least CONFIDENT (or at most 1 - CONFIDENT). At 80 pixels the
# 14 alphamatting.com trimaps are solved by matting alone (SAD/1000 4.65). At 40 the model
# decided parts of their wide bands, and SAD rose to 5.11.
HINT_BAND_PIXELS = 80
CONFIDENT = 0.95

ProgressCallback = Callable[[float, str], None]


@dataclass
class Options:
    """The user's choices, each defaulting to the CLI's and the editors' default."""

    model: str | None = None  # catalogue name; None is the catalogue's default
    refine: bool = True  # edge-aware upsampling; False gives a plain bilinear resize
    threshold: int | None = None  # 0..255: make the mask binary at this level
    grow: float = 0.0  # pixels; negative shrinks
    feather: float = 0.0  # Gaussian feather radius in pixels
    invert: bool = False
    combine: bool = True  # combine with the model's partner in the catalogue, when it is installed
    clear_enclosed: bool = True  # clear enclosed background that only the partner model marks as subject
    threads: int | None = None  # inference threads; None: AI_REMOVE_BACKGROUND_THREADS or automatic

    def validate(self) -> None:
        get_model(self.model)
        if self.threshold is not None and not 0 <= self.threshold <= 255:
            raise UserError(f"invalid threshold {self.threshold}: expected 0 to 255")
        if not math.isfinite(self.feather) or self.feather < 0:
            raise UserError(f"invalid feather radius {self.feather}: expected 0 or more pixels")
        if not math.isfinite(self.grow) or abs(self.grow) > MAX_GROW_PIXELS:
            raise UserError(f"invalid grow/shrink {self.grow}: expected -{MAX_GROW_PIXELS} to {MAX_GROW_PIXELS} pixels")
        if self.threads is not None and not 0 <= self.threads <= MAX_THREADS:
            raise UserError(f"invalid thread count {self.threads}: expected 0 (automatic) to {MAX_THREADS}")


@dataclass
class Result:
    mask: np.ndarray  # (height, width) uint8, 255 = subject
    model: str
    provider: str
    seconds: float


def _model_view(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The photo as the model should see it: transparent pixels replaced by neutral grey."""
    if alpha is None:
        return rgb
    weight = alpha.astype(np.float32)[:, :, np.newaxis] / 255.0
    blended = rgb.astype(np.float32) * weight + TRANSPARENT_FILL * (1.0 - weight)
    return np.rint(blended).astype(np.uint8)


def _bounding_box(plane: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(plane.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(plane.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def _run_model(name: str, rgb: np.ndarray, threads: int | None) -> tuple[np.ndarray, str]:
    loaded = load_model(get_model(name), threads)
    started = time.perf_counter()
    probability = predict(loaded, rgb)
    log.debug("model %s ran in %.3f s on %s", name, time.perf_counter() - started, loaded.provider)
    return probability, loaded.provider


def _partner(options: Options) -> str | None:
    """Return the installed model to combine with the chosen one, or None."""
    partner = get_model(options.model).combine_with
    if not options.combine or partner is None:
        return None
    if partner not in installed_model_names():
        if partner not in _warned_partners:
            _warned_partners.add(partner)
            log.warning("model %s is not installed, so secondary objects may be dropped: run "
                        "'python3 install.py --models %s'", partner, partner)
        return None
    return partner


_warned_partners: set[str] = set()


def _segment(rgb: np.ndarray, options: Options, progress: ProgressCallback) -> tuple[np.ndarray, str]:
    """Run the model (and its partner) and bring the probability to full resolution.

    Returns (probability, execution provider).
    """
    spec = get_model(options.model)
    progress(0.05, "loading model")
    load_model(spec, options.threads)
    progress(0.15, "inference")
    probability, provider = _run_model(spec.name, rgb, options.threads)
    partner = _partner(options)
    if partner is not None:
        progress(0.6, "inference")
        extra, _ = _run_model(partner, rgb, options.threads)
        low_height, low_width = probability.shape
        primary = probability
        probability = np.maximum(probability, refine.resize_float(extra, low_width, low_height))
        if options.clear_enclosed:
            probability = holes.clear_enclosed_background(probability, primary, rgb)

    progress(0.75, "refining")
    height, width = rgb.shape[:2]
    if options.refine:
        return refine.sharpen(refine.upsample_guided(probability, rgb)), provider
    return refine.upsample_plain(probability, width, height), provider


def _solve_hint(
    rgb: np.ndarray, alpha: np.ndarray | None, hint: np.ndarray, options: Options, report: ProgressCallback
) -> tuple[np.ndarray, str]:
    """Keep the hint's 0 and 255 pixels and solve the pixels between them by matting.

    Unknown pixels farther than HINT_BAND_PIXELS from every fixed pixel are too far for matting
    to reach reliably, so the model decides them. Where its probability is confident, that
    value is fixed too, and matting solves the rest. Returns (mask, execution provider or "").
    """
    view = _model_view(rgb, alpha)
    trimap = hint
    provider = ""
    fixed = (hint == 0) | (hint == 255)
    far = ndimage.distance_transform_edt(~fixed) > HINT_BAND_PIXELS
    if far.any():
        probability, provider = _segment(view, options, report)
        trimap = hint.copy()
        trimap[far & (probability >= CONFIDENT)] = 255
        trimap[far & (probability <= 1.0 - CONFIDENT)] = 0
    report(0.8, "refining")
    return refine.to_u8(matting.solve_alpha(view, trimap)), provider


def remove_background(
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    options: Options | None = None,
    limit: np.ndarray | None = None,
    hint: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> Result:
    """Return the subject's mask for an sRGB photo.

    `alpha` is the photo's own transparency: the mask never exceeds it. `limit` restricts the
    search (the model runs only on its bounding box, and the mask is multiplied by it). `hint` is a
    user's mask whose 0 and 255 pixels are kept as they are. When it has both, the pixels in
    between are solved by closed-form matting, with the model deciding only pixels far from
    any painted pixel.
    """
    options = options or Options()
    options.validate()
    report = progress or (lambda fraction, stage: None)
    started = time.perf_counter()
    height, width = rgb.shape[:2]
    for name, plane in (("alpha", alpha), ("limit", limit), ("hint", hint)):
        if plane is not None and plane.shape != (height, width):
            raise UserError(f"{name} plane is {plane.shape[1]} x {plane.shape[0]}, expected {width} x {height}")

    spec = get_model(options.model)
    provider = ""
    if hint is not None and bool((hint == 0).any()) and bool((hint == 255).any()):
        mask, provider = _solve_hint(rgb, alpha, hint, options, report)
    else:
        mask = np.zeros((height, width), dtype=np.uint8)
        box = (slice(0, height), slice(0, width)) if limit is None else _bounding_box(limit > 0)
        if box is not None:
            view = _model_view(rgb[box], None if alpha is None else alpha[box])
            probability, provider = _segment(np.ascontiguousarray(view), options, report)
            mask[box] = refine.to_u8(probability)
        if hint is not None:
            mask = np.where(hint == 255, 255, np.where(hint == 0, 0, mask)).astype(np.uint8)

    if options.threshold is not None:
        mask = refine.apply_threshold(mask, options.threshold)
    mask = refine.grow_shrink(mask, options.grow)
    mask = refine.feather(mask, options.feather)
    if options.invert:
        mask = 255 - mask
    if limit is not None:
        mask = ((mask.astype(np.uint16) * limit + 127) // 255).astype(np.uint8)
    if alpha is not None:
        mask = np.minimum(mask, alpha)

    report(1.0, "done")
    return Result(mask=mask, model=spec.name, provider=provider, seconds=time.perf_counter() - started)
