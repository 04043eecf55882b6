"""Tests of each refinement step on the sample photos, with the real default models.

The steps are guided upsampling and sharpening (refine.py), closed-form matting and the
hint-mask mode (matting.py, pipeline.py), and the compositing onto a new background
(composite.py). Each threshold has a margin over a value measured with ISNet combined with
u2netp, onnxruntime 1.32 and numpy 2.4 on an AMD EPYC machine. The comments give the measured
values, and the value of the plain method that the step replaces where there is one.

The model masks are computed once per module, because each model run took about 2 s there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ai_remove_background import Options, composite, matting, refine, remove_background
from ai_remove_background.catalogue import default_model_name, get_model
from installed_models import require_models
from ai_remove_background.imageio import load_image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
REFERENCE_MASK = Path(__file__).resolve().parent / "data" / "astronaut_reference_mask.png"
PHOTOS = ("astronaut", "chelsea")

# Below row 240 and left of column 64 of the astronaut, the combined models mark some stripes of
# the flag beside her arm as subject, but the reference mask does not. No refinement can fix a
# segmentation error of that size, so edge comparisons with the reference leave this region out.
ASTRONAUT_FLAG = (slice(240, 512), slice(0, 64))
# Width, in pixels on each side of an outline, of the band where edges are compared.
EDGE_BAND_PIXELS = 10
GREEN = (0, 255, 0)


@pytest.fixture(scope="module", autouse=True)
def models_installed() -> None:
    required = [default_model_name()]
    partner = get_model(None).combine_with
    if partner is not None:
        required.append(partner)
    require_models(*required)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: load_image(SAMPLES / f"{name}.jpg").rgb for name in PHOTOS}


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """Return the astronaut's reference mask as a boolean subject plane."""
    with Image.open(REFERENCE_MASK) as image:
        return np.asarray(image) >= 128


@pytest.fixture(scope="module")
def refined_masks(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the default pipeline's mask of each photo (guided upsampling, then sharpening)."""
    return {name: remove_background(rgb).mask for name, rgb in photos.items()}


@pytest.fixture(scope="module")
def plain_masks(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return each photo's mask with refine=False, which is a plain bilinear resize."""
    return {name: remove_background(rgb, options=Options(refine=False)).mask for name, rgb in photos.items()}


def disk(radius: int) -> np.ndarray:
    rows, columns = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return rows**2 + columns**2 <= radius**2


def edge_band(subject: np.ndarray, width: int) -> np.ndarray:
    """Select the pixels within `width` pixels of the outline of a boolean subject plane."""
    outline = subject & ~ndimage.binary_erosion(subject)
    return ndimage.distance_transform_edt(~outline) <= width


def make_trimap(subject: np.ndarray, shrink: int, grow: int) -> np.ndarray:
    """Build a trimap: 255 on the subject shrunk by `shrink` px, 0 outside it grown by `grow` px.

    The pixels between are 128 (unknown).
    """
    trimap = np.full(subject.shape, 128, dtype=np.uint8)
    trimap[ndimage.binary_erosion(subject, disk(shrink), border_value=1)] = 255
    trimap[~ndimage.binary_dilation(subject, disk(grow))] = 0
    return trimap


def gradient_magnitude(values: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a 2-D plane, or the root of the sum over channels of a 3-D one."""
    planes = values[:, :, np.newaxis] if values.ndim == 2 else values
    squares = [ndimage.sobel(planes[:, :, channel], axis) ** 2
               for channel in range(planes.shape[2]) for axis in (0, 1)]
    return np.sqrt(np.sum(squares, axis=0))


def edge_alignment(mask: np.ndarray, rgb: np.ndarray) -> float:
    """Average the photo's gradient magnitude (colours 0..1), weighted by the mask's squared gradient.

    The value is high when the mask changes where the photo has edges.
    """
    mask_gradient = gradient_magnitude(mask.astype(np.float64)) ** 2
    photo_gradient = gradient_magnitude(rgb.astype(np.float64) / 255.0)
    return float((mask_gradient * photo_gradient).sum() / mask_gradient.sum())


def local_colour(rgb: np.ndarray, weight: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the Gaussian-weighted mean colour of the pixels that `weight` selects, around each pixel.

    The second array is the blurred weight, which is near 0 where no selected pixel is close.
    """
    blurred_weight = ndimage.gaussian_filter(weight, sigma)
    channels = [ndimage.gaussian_filter(rgb[:, :, channel] * weight, sigma) for channel in range(3)]
    return np.dstack(channels) / np.maximum(blurred_weight, 1e-6)[:, :, np.newaxis], blurred_weight


def projection_coefficient(offset: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Return, per pixel, the least-squares coefficient of an RGB offset projected onto an RGB direction."""
    return np.sum(offset * direction, axis=-1) / np.maximum(np.sum(direction**2, axis=-1), 1e-6)


class LocalColours:
    """The mean subject and background colours near each pixel of a photo, from its solid mask pixels."""

    # Gaussian standard deviation of the neighbourhood, in pixels.
    SIGMA = 5.0
    # Pixels whose two local colours are closer than this (Euclidean, 0..255 levels) are left out,
    # because the projection onto their difference is then dominated by noise.
    MIN_CONTRAST = 40.0

    def __init__(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        photo = rgb.astype(np.float64)
        self.subject, subject_weight = local_colour(photo, (mask == 255).astype(np.float64), self.SIGMA)
        self.background, background_weight = local_colour(photo, (mask == 0).astype(np.float64), self.SIGMA)
        contrast = np.linalg.norm(self.background - self.subject, axis=-1)
        self.usable = (contrast >= self.MIN_CONTRAST) & (subject_weight > 0.01) & (background_weight > 0.01)


# Guided upsampling and sharpening


def test_refined_edge_matches_reference(
    refined_masks: dict[str, np.ndarray], plain_masks: dict[str, np.ndarray], reference: np.ndarray
) -> None:
    # NOTE: the reference's outline is ISNet's mask after this same guided filter, cut at level 128
    # (tests/data/README.md). With combine=False the engine still reproduces it at level 128 to
    # the pixel. So
    # this is a regression check of the refined edge, not independent evidence that the guided
    # filter helps; test_guided_filter_follows_photo_edges checks that against the photo.
    band = edge_band(reference, EDGE_BAND_PIXELS)
    band[ASTRONAUT_FLAG] = False
    truth = reference[band]
    refined = refined_masks["astronaut"][band] / 255.0
    plain = plain_masks["astronaut"][band] / 255.0

    refined_error = np.abs(refined - truth).mean()
    plain_error = np.abs(plain - truth).mean()
    refined_disagreement = ((refined >= 0.5) != truth).mean()
    plain_disagreement = ((plain >= 0.5) != truth).mean()

    # Mean absolute error: refined 0.016, plain 0.048, guided filter without sharpening 0.055,
    # sharpening without the guided filter 0.021.
    assert refined_error < 0.03
    assert refined_error < plain_error / 2
    # Share of band pixels on the wrong side at level 128, where sharpening changes nothing:
    # refined 0.0057, plain 0.0155.
    assert refined_disagreement < 0.01
    assert refined_disagreement < plain_disagreement / 2


@pytest.mark.parametrize(("photo", "min_gain"), [("astronaut", 1.12), ("chelsea", 1.03)])
def test_guided_filter_follows_photo_edges(
    photos: dict[str, np.ndarray], plain_masks: dict[str, np.ndarray], photo: str, min_gain: float
) -> None:
    # Both photos are smaller than the model's input, so the filter fits at the photo's size and
    # the plain mask is as good an input as the model's own map. Sharpened, the mask refined here
    # differed from the pipeline's refined mask by at most one level.
    rgb = photos[photo]
    plain = plain_masks[photo].astype(np.float32) / 255.0
    guided = refine.upsample_guided(plain, rgb)

    gain = edge_alignment(guided, rgb) / edge_alignment(plain, rgb)

    # Measured gain: 1.235 on the astronaut's studio edges, 1.059 on the cat, whose fur edges and
    # blurred room give the filter less to follow. The plain mask's own gain is 1 by definition.
    assert gain >= min_gain


@pytest.mark.parametrize(("photo", "min_solid"), [("astronaut", 0.99), ("chelsea", 0.95)])
def test_sharpen_makes_far_pixels_solid(
    photos: dict[str, np.ndarray], plain_masks: dict[str, np.ndarray], photo: str, min_solid: float
) -> None:
    guided = refine.upsample_guided(plain_masks[photo].astype(np.float32) / 255.0, photos[photo])
    sharpened = refine.sharpen(guided)
    far = ~edge_band(sharpened >= 0.5, EDGE_BAND_PIXELS)
    solid = np.isin(refine.to_u8(sharpened), (0, 255))

    # Sharpening stretches the contrast around 0.5, so the outline at level 0.5 must not move.
    assert np.array_equal(sharpened >= 0.5, guided >= 0.5)
    # Share of pixels farther than 10 px from the outline that are exactly 0 or 255. Sharpened,
    # it was 0.997 on the astronaut and 0.973 on the cat. Unsharpened, it was 0.950 and 0.603.
    assert solid[far].mean() >= min_solid


# Closed-form matting


@pytest.mark.parametrize(("shrink", "grow"), [(2, 8), (8, 2)])
def test_matting_recovers_reference_edge(
    photos: dict[str, np.ndarray], reference: np.ndarray, shrink: int, grow: int
) -> None:
    # The band is lopsided around the reference outline, so the middle of the band is 3 px off
    # the edge, and only the photo's colours can move the solved edge back onto it.
    trimap = make_trimap(reference, shrink, grow)
    unknown = trimap == 128
    alpha = matting.solve_alpha(photos["astronaut"], trimap)

    error = np.abs(alpha[unknown] - reference[unknown]).mean()
    disagreement = ((alpha[unknown] >= 0.5) != reference[unknown]).mean()

    # Measured for (2, 8) and (8, 2): mean absolute error 0.131 and 0.126, and share of band
    # pixels on the wrong side of level 0.5 0.059 and 0.054. Solved on a flat grey image instead,
    # so that colour plays no part, the errors are 0.37 and 0.37, and the shares 0.32 and 0.31.
    assert error < 0.2
    assert disagreement < 0.1


def test_matting_keeps_fixed_pixels(photos: dict[str, np.ndarray], reference: np.ndarray) -> None:
    trimap = make_trimap(reference, 8, 2)
    alpha = matting.solve_alpha(photos["astronaut"], trimap)

    assert alpha.shape == trimap.shape
    assert alpha.dtype == np.float32
    assert (alpha[trimap == 255] == 1.0).all()
    assert (alpha[trimap == 0] == 0.0).all()
    # The unclipped solution of this trimap spans -0.40 to 1.19, so the clipping is exercised.
    assert alpha.min() >= 0.0
    assert alpha.max() <= 1.0


# Hint-mask mode


def test_hint_narrow_band_solved_by_matting(
    photos: dict[str, np.ndarray], reference: np.ndarray
) -> None:
    hint = make_trimap(reference, 2, 8)
    unknown = hint == 128

    result = remove_background(photos["astronaut"], hint=hint)
    mask = result.mask

    # The model did not run, because every unknown pixel is within HINT_BAND_PIXELS of a painted one.
    assert result.provider == ""
    assert (mask[hint == 255] == 255).all()
    assert (mask[hint == 0] == 0).all()
    # Share of band pixels left at the hint's 128: measured 0.002.
    assert (mask[unknown] == 128).mean() < 0.02
    # Share of band pixels on the wrong side of level 128: measured 0.059.
    assert ((mask[unknown] >= 128) != reference[unknown]).mean() < 0.1


def test_hint_wide_band_uses_model(
    photos: dict[str, np.ndarray], refined_masks: dict[str, np.ndarray]
) -> None:
    # A few painted patches on the cat: its forehead as subject, and three corners of the room as
    # background. Two thirds of the unknown pixels are more than HINT_BAND_PIXELS from all of them.
    hint = np.full((300, 451), 128, dtype=np.uint8)
    hint[160:180, 220:240] = 255
    hint[0:8, 0:8] = 0
    hint[0:8, 443:451] = 0
    hint[292:300, 443:451] = 0
    unknown = hint == 128

    result = remove_background(photos["chelsea"], hint=hint)
    mask = result.mask
    agreement = ((mask[unknown] >= 128) == (refined_masks["chelsea"][unknown] >= 128)).mean()

    assert result.provider != ""  # the model ran
    assert (mask[hint == 255] == 255).all()
    assert (mask[hint == 0] == 0).all()
    # Share of unknown pixels on the same side of level 128 as the default mask: measured 0.995.
    # Matting alone, without the model deciding the far pixels, gives 0.876.
    assert agreement >= 0.97


# Compositing onto a new background


@pytest.mark.parametrize("photo", PHOTOS)
def test_composite_keeps_solid_pixels(
    photos: dict[str, np.ndarray], refined_masks: dict[str, np.ndarray], photo: str
) -> None:
    rgb, mask = photos[photo], refined_masks[photo]
    background = composite.make_background("#00ff00", rgb, mask)

    foreground = composite.estimate_foreground(rgb, mask)
    result = composite.over_background(foreground, mask, background)

    solid = (mask == 0) | (mask == 255)
    assert (foreground[solid] == rgb[solid]).all()
    assert (result[mask == 255] == rgb[mask == 255]).all()
    assert (result[mask == 0] == GREEN).all()


@pytest.mark.parametrize(("photo", "min_naive_share"), [("astronaut", 0.15), ("chelsea", 0.09)])
def test_decontamination_removes_old_background(
    photos: dict[str, np.ndarray], refined_masks: dict[str, np.ndarray], photo: str, min_naive_share: float
) -> None:
    """Compare the old background's share in the edge band of composites over green.

    One composite uses the photo's colours, the other the colours from estimate_foreground.

    With local subject colour F, local old background colour B (LocalColours), alpha a and green G,
    a composite pixel C is written as C = a F + (1 - a) G + s (B - F). The least-squares
    coefficient s is the amount of old background colour that took the place of subject colour.
    With the photo's own colours s is about a (1 - a), and with the old background fully removed
    it is 0.
    """
    rgb, mask = photos[photo], refined_masks[photo]
    background = composite.make_background("#00ff00", rgb, mask)
    naive = composite.over_background(rgb, mask, background).astype(np.float64)
    cleaned = composite.over_background(composite.estimate_foreground(rgb, mask), mask, background)

    colours = LocalColours(rgb, mask)
    alpha = (mask.astype(np.float64) / 255.0)[:, :, np.newaxis]
    expected = alpha * colours.subject + (1.0 - alpha) * np.asarray(GREEN, dtype=np.float64)
    direction = colours.background - colours.subject
    band = (mask >= 26) & (mask <= 229) & colours.usable  # alpha 0.1 to 0.9

    naive_share = projection_coefficient(naive - expected, direction)[band].mean()
    cleaned_share = projection_coefficient(cleaned.astype(np.float64) - expected, direction)[band].mean()

    # Pixels measured: 1587 on the astronaut and 1331 on the cat. Mean s without decontamination:
    # 0.216 and 0.127, which shows that the measure detects the fringe. With it: 0.000 and -0.027.
    assert naive_share > min_naive_share
    assert abs(cleaned_share) < 0.06


@pytest.mark.parametrize("photo", PHOTOS)
def test_blurred_background_excludes_subject(
    photos: dict[str, np.ndarray], refined_masks: dict[str, np.ndarray], photo: str
) -> None:
    """Check that the "blur" background beside the subject keeps the local background colour.

    For each background pixel within 8 px of the subject, the share of subject colour is the
    projection coefficient of (blurred - B) onto (F - B), with the local colours of LocalColours.
    """
    rgb, mask = photos[photo], refined_masks[photo]
    blurred = composite.make_background("blur", rgb, mask).astype(np.float64)
    colours = LocalColours(rgb, mask)
    subject = mask >= 128
    beside = (mask == 0) & (ndimage.distance_transform_edt(~subject) <= 8) & colours.usable

    share = projection_coefficient(blurred - colours.background, colours.subject - colours.background)[beside]

    # Measured mean share: 0.026 on the astronaut and 0.057 on the cat. A plain Gaussian blur of
    # the photo with the same standard deviation gives 0.302 and 0.271.
    assert share.mean() < 0.12
