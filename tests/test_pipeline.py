"""Tests of remove_background with the real default model (ISNet) on the committed photos.

The masks are computed once per module, because one ISNet run takes about 1.5 s on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ai_remove_background import Options, UserError, remove_background
from ai_remove_background.catalogue import default_model_name, installed_model_names
from installed_models import require_models
from ai_remove_background.imageio import load_image

CHECKOUT = Path(__file__).resolve().parent.parent
SAMPLES = CHECKOUT / "samples"
REFERENCE_MASK = Path(__file__).resolve().parent / "data" / "astronaut_reference_mask.png"

# Regions as (rows, columns). Astronaut, 512 x 512: her face, the orange suit of her torso, and
# the top corners, which show the studio background. The bottom corners are her arm and the
# helmet. Cat, 451 x 300: the middle of its forehead, and the three corners that show the
# blurred room; the bottom-left corner is the cat's chest.
ASTRONAUT_FACE = (slice(95, 145), slice(205, 235))
ASTRONAUT_TORSO = (slice(360, 430), slice(110, 200))
ASTRONAUT_CORNERS = {"top left": (slice(0, 16), slice(0, 16)), "top right": (slice(0, 16), slice(496, 512))}
CAT_FOREHEAD = (slice(160, 180), slice(220, 240))
CAT_CORNERS = {"top left": (slice(0, 8), slice(0, 8)), "top right": (slice(0, 8), slice(443, 451)),
               "bottom right": (slice(292, 300), slice(443, 451))}


def iou(first: np.ndarray, second: np.ndarray, level: int = 128) -> float:
    a, b = first >= level, second >= level
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module", autouse=True)
def models_installed() -> None:
    require_models(default_model_name(), "u2netp")


@pytest.fixture(scope="module")
def default_masks() -> dict[str, np.ndarray]:
    masks = {}
    for name in ("astronaut", "chelsea"):
        photo = load_image(SAMPLES / f"{name}.jpg")
        masks[name] = remove_background(photo.rgb, photo.alpha).mask
    return masks


def test_default_model_isnet() -> None:
    assert default_model_name() == "isnet"


def test_astronaut_subject_opaque(default_masks: dict[str, np.ndarray]) -> None:
    mask = default_masks["astronaut"]

    assert mask.shape == (512, 512)
    assert mask[ASTRONAUT_FACE].min() >= 250
    assert mask[ASTRONAUT_TORSO].min() >= 250


@pytest.mark.parametrize("corner", sorted(ASTRONAUT_CORNERS))
def test_astronaut_corner_transparent(default_masks: dict[str, np.ndarray], corner: str) -> None:
    assert default_masks["astronaut"][ASTRONAUT_CORNERS[corner]].max() <= 5


def test_cat_subject_opaque(default_masks: dict[str, np.ndarray]) -> None:
    mask = default_masks["chelsea"]

    assert mask.shape == (300, 451)
    assert mask[CAT_FOREHEAD].min() >= 250


@pytest.mark.parametrize("corner", sorted(CAT_CORNERS))
def test_cat_corner_transparent(default_masks: dict[str, np.ndarray], corner: str) -> None:
    assert default_masks["chelsea"][CAT_CORNERS[corner]].max() <= 5


def test_astronaut_matches_reference(default_masks: dict[str, np.ndarray]) -> None:
    with Image.open(REFERENCE_MASK) as image:
        assert image.mode == "L"
        reference = np.asarray(image)

    assert reference.shape == (512, 512)
    assert iou(default_masks["astronaut"], reference) >= 0.95


def test_alpha_caps_mask() -> None:
    photo = load_image(SAMPLES / "astronaut.jpg")
    alpha = np.full((512, 512), 255, dtype=np.uint8)
    alpha[:, :256] = 0  # the left half, face included, is transparent
    alpha[:, 256:300] = 100

    mask = remove_background(photo.rgb, alpha, Options(model="u2netp")).mask

    assert (mask[:, :256] == 0).all()
    assert mask[:, 256:300].max() <= 100
    assert mask[ASTRONAUT_TORSO[0], 300:340].min() >= 200  # the suit right of the transparent part


@pytest.mark.parametrize("model", ["isnet", "u2netp", "rvm"])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 5), (40, 30)])
def test_tiny_image_mask(model: str, size: tuple[int, int]) -> None:
    if model not in installed_model_names():
        pytest.fail(f"model {model} is not installed: run 'python3 install.py --models {model}'")
    width, height = size
    rgb = np.full((height, width, 3), (200, 120, 40), dtype=np.uint8)

    mask = remove_background(rgb, None, Options(model=model)).mask

    assert mask.shape == (height, width)
    assert mask.dtype == np.uint8


def test_bad_plane_size_rejected() -> None:
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)

    with pytest.raises(UserError) as caught:
        remove_background(rgb, np.zeros((20, 10), dtype=np.uint8), Options(model="u2netp"))

    assert "alpha plane is 10 x 20, expected 20 x 10" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        Options(feather=float("inf")),
        Options(feather=float("nan")),
        Options(grow=float("nan")),
        Options(grow=1001),
        Options(threads=100000),
        Options(threshold=256),
    ],
)
def test_options_reject_invalid_values(options: Options) -> None:
    with pytest.raises(UserError):
        options.validate()
