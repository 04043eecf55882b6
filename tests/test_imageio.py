"""Tests of image decoding: every Pillow mode, alpha, EXIF orientation, ICC profiles, bad files.

The files are generated here with Pillow and numpy, or written byte by byte by file_writers.py
where Pillow cannot write the kind (16-bit RGB PNG, 16-bit RGBA TIFF). The end-to-end cases run the real CLI with
the real u2netp model once over a folder of every mode.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from installed_models import require_models
from ai_remove_background.errors import ImageTooLargeError, UserError
from ai_remove_background.imageio import load_image, pixels_from_buffer
from file_writers import write_png16, write_png_header_bomb, write_tiff16_rgba

CHECKOUT = Path(__file__).resolve().parent.parent
SAMPLES = CHECKOUT / "samples"

# The synthetic photo: a bright disc (the subject) on a dark background.
WIDTH, HEIGHT = 128, 96
CENTRE_X, CENTRE_Y, RADIUS = 64, 48, 28
BRIGHT, DARK = 230, 20
# Input pixels left of this column are transparent in the cases with alpha. The column cuts
# through the disc, so a transparent part of the subject must stay 0 in the mask.
TRANSPARENT_BEFORE_X = 50


def distance_from_centre() -> np.ndarray:
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    return np.hypot(columns - CENTRE_X, rows - CENTRE_Y)


DISC = distance_from_centre() < RADIUS
# Regions where the mask's value is certain: well inside the disc, and well outside it.
INNER = distance_from_centre() < RADIUS - 6
OUTER = distance_from_centre() > RADIUS + 8
TRANSPARENT = np.zeros((HEIGHT, WIDTH), dtype=bool)
TRANSPARENT[:, :TRANSPARENT_BEFORE_X] = True


def grey_disc(bright: int = BRIGHT, dark: int = DARK, dtype: type = np.uint8) -> np.ndarray:
    return np.where(DISC, bright, dark).astype(dtype)


def rgb_disc() -> np.ndarray:
    return np.dstack([grey_disc()] * 3)


def alpha_plane() -> np.ndarray:
    return np.where(TRANSPARENT, 0, 255).astype(np.uint8)


def channel_swapped_srgb_profile() -> bytes:
    """sRGB's ICC profile with the red and blue colorants swapped.

    A red pixel tagged with this profile is blue in sRGB, so a loader that applies the profile
    gives a result that no loader ignoring it can give.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (tag_count,) = struct.unpack(">I", profile[128:132])
    positions = {}
    for index in range(tag_count):
        start = 132 + 12 * index
        positions[bytes(profile[start:start + 4])] = start + 4
    red, blue = positions[b"rXYZ"], positions[b"bXYZ"]
    profile[red:red + 8], profile[blue:blue + 8] = profile[blue:blue + 8], profile[red:red + 8]
    profile[84:100] = bytes(16)  # the profile ID, an MD5 of the profile, is now wrong: 0 means unset
    return bytes(profile)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def palette_disc_with_transparency() -> Image.Image:
    """A P image: index 0 background, 1 disc, 2 the transparent strip (the tRNS index)."""
    indices = np.where(DISC, 1, 0).astype(np.uint8)
    indices[TRANSPARENT] = 2
    image = Image.fromarray(indices, mode="P")
    image.putpalette([DARK] * 3 + [BRIGHT] * 3 + [BRIGHT] * 3)
    image.info["transparency"] = 2
    return image


def grey_with_transparent_value(transparent_value: int, bright: int, dark: int, dtype: type) -> np.ndarray:
    """A grey disc whose transparent part has `transparent_value`, a value used nowhere else."""
    grey = grey_disc(bright, dark, dtype)
    grey[TRANSPARENT] = transparent_value
    return grey


# Each writer saves the disc photo in one mode.
def write_mode_1(path: Path) -> None:
    Image.fromarray(DISC).save(path)


def write_mode_l(path: Path) -> None:
    Image.fromarray(grey_disc()).save(path)


def write_mode_la(path: Path) -> None:
    Image.fromarray(np.dstack([grey_disc(), alpha_plane()]), mode="LA").save(path)


def write_mode_p(path: Path) -> None:
    Image.fromarray(rgb_disc()).quantize(colors=4).save(path)


def write_mode_p_trns(path: Path) -> None:
    palette_disc_with_transparency().save(path, transparency=2)


def write_mode_l_trns(path: Path) -> None:
    Image.fromarray(grey_with_transparent_value(7, BRIGHT, DARK, np.uint8)).save(path, transparency=7)


def write_mode_rgb(path: Path) -> None:
    Image.fromarray(rgb_disc()).save(path)


def write_mode_rgb_trns(path: Path) -> None:
    rgb = rgb_disc()
    rgb[TRANSPARENT] = (7, 8, 9)
    Image.fromarray(rgb).save(path, transparency=(7, 8, 9))


def write_mode_rgba(path: Path) -> None:
    Image.fromarray(np.dstack([rgb_disc(), alpha_plane()])).save(path)


def write_mode_cmyk(path: Path) -> None:
    Image.fromarray(rgb_disc()).convert("CMYK").save(path, quality=95)


def write_mode_i16_png(path: Path) -> None:
    Image.fromarray(grey_disc(60000, 3000, np.uint16)).save(path)


def write_mode_i16_png_trns(path: Path) -> None:
    grey = grey_with_transparent_value(1234, 60000, 3000, np.uint16)
    Image.fromarray(grey).save(path, transparency=1234)


def write_mode_i16_tiff(path: Path) -> None:
    Image.fromarray(grey_disc(60000, 3000, np.uint16)).save(path)


def write_mode_i32_tiff(path: Path) -> None:
    Image.fromarray(grey_disc(60000, 3000, np.int32)).save(path)


def write_mode_f_tiff(path: Path) -> None:
    Image.fromarray(np.where(DISC, 0.9, 0.08).astype(np.float32)).save(path)


def write_mode_rgb16_png(path: Path) -> None:
    write_png16(path, np.dstack([grey_disc(60000, 3000, np.uint16)] * 3))


def write_mode_rgba16_png(path: Path) -> None:
    alpha = np.where(TRANSPARENT, 0, 65535).astype(np.uint16)
    write_png16(path, np.dstack([grey_disc(60000, 3000, np.uint16)] * 3 + [alpha]))


def write_mode_rgba16_tiff(path: Path) -> None:
    alpha = np.where(TRANSPARENT, 0, 65535).astype(np.uint16)
    write_tiff16_rgba(path, np.dstack([grey_disc(60000, 3000, np.uint16)] * 3 + [alpha]), srgb_profile())


def write_mode_lab_tiff(path: Path) -> None:
    lightness = np.where(DISC, 235, 20).astype(np.uint8)
    neutral = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
    Image.merge("LAB", [Image.fromarray(lightness), Image.fromarray(neutral), Image.fromarray(neutral)]).save(path)


# Case name: (file suffix, writer). Each file is named mode_<case name><suffix>.
MODES = {
    "1": (".png", write_mode_1),
    "L": (".png", write_mode_l),
    "LA": (".png", write_mode_la),
    "P": (".png", write_mode_p),
    "P_tRNS": (".png", write_mode_p_trns),
    "L_tRNS": (".png", write_mode_l_trns),
    "RGB": (".png", write_mode_rgb),
    "RGB_tRNS": (".png", write_mode_rgb_trns),
    "RGBA": (".png", write_mode_rgba),
    "CMYK": (".jpg", write_mode_cmyk),
    "I16_PNG": (".png", write_mode_i16_png),
    "I16_PNG_tRNS": (".png", write_mode_i16_png_trns),
    "I16_TIFF": (".tif", write_mode_i16_tiff),
    "I32_TIFF": (".tif", write_mode_i32_tiff),
    "F_TIFF": (".tif", write_mode_f_tiff),
    "RGB16_PNG": (".png", write_mode_rgb16_png),
    "RGBA16_PNG": (".png", write_mode_rgba16_png),
    "RGBA16_TIFF_ICC": (".tif", write_mode_rgba16_tiff),
    "LAB_TIFF": (".tif", write_mode_lab_tiff),
}
# The modes whose files mark the pixels left of TRANSPARENT_BEFORE_X as transparent.
MODES_WITH_ALPHA = {"LA", "P_tRNS", "L_tRNS", "RGB_tRNS", "RGBA", "I16_PNG_tRNS", "RGBA16_PNG", "RGBA16_TIFF_ICC"}
# Grey levels that the subject and the background have after decoding, by mode.
EXPECTED_LEVELS = {
    "1": (255, 0),
    "I16_PNG": (233, 12), "I16_PNG_tRNS": (233, 12), "I16_TIFF": (233, 12), "I32_TIFF": (233, 12),
    "RGB16_PNG": (233, 12), "RGBA16_PNG": (233, 12), "RGBA16_TIFF_ICC": (233, 12),
    "F_TIFF": (230, 20),
}
# JPEG, the one lossy format here, rings near the disc's edge. Lab values map to sRGB levels
# only approximately.
LEVEL_TOLERANCE = {"CMYK": 10, "LAB_TIFF": 3}


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("modes")
    paths = {}
    for name, (suffix, writer) in MODES.items():
        path = folder / f"mode_{name.lower()}{suffix}"
        writer(path)
        paths[name] = path
    return paths


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_decodes_disc(mode_files: dict[str, Path], mode: str) -> None:
    loaded = load_image(mode_files[mode])
    bright, dark = EXPECTED_LEVELS.get(mode, (BRIGHT, DARK))
    opaque_inner = INNER & ~TRANSPARENT if mode in MODES_WITH_ALPHA else INNER
    tolerance = LEVEL_TOLERANCE.get(mode, 1)

    assert loaded.rgb.shape == (HEIGHT, WIDTH, 3)
    assert loaded.rgb.dtype == np.uint8
    assert np.abs(loaded.rgb[opaque_inner].astype(int) - bright).max() <= tolerance
    assert np.abs(loaded.rgb[OUTER & ~TRANSPARENT].astype(int) - dark).max() <= tolerance


@pytest.mark.parametrize("mode", sorted(MODES_WITH_ALPHA))
def test_mode_keeps_alpha(mode_files: dict[str, Path], mode: str) -> None:
    loaded = load_image(mode_files[mode])

    assert loaded.alpha is not None
    assert loaded.alpha.shape == (HEIGHT, WIDTH)
    assert (loaded.alpha[TRANSPARENT] == 0).all()
    assert (loaded.alpha[~TRANSPARENT] == 255).all()


@pytest.mark.parametrize("mode", sorted(set(MODES) - MODES_WITH_ALPHA))
def test_opaque_mode_has_no_alpha(mode_files: dict[str, Path], mode: str) -> None:
    assert load_image(mode_files[mode]).alpha is None


def run_cli(*arguments: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; every run must keep tracebacks off stderr."""
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", *map(str, arguments)],
                            capture_output=True, text=True, timeout=600, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def mode_masks(mode_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Masks of every mode's file, from one CLI run with u2netp over the folder."""
    require_models("u2netp")
    output = tmp_path_factory.mktemp("mode_masks")
    folder = next(iter(mode_files.values())).parent
    result = run_cli(folder, "--model", "u2netp", "--mask", "-o", output)
    assert result.returncode == 0, result.stderr
    masks = {}
    for name, path in mode_files.items():
        with Image.open(output / (path.stem + ".png")) as image:
            assert image.mode == "L"
            masks[name] = np.asarray(image)
    return masks


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mode_mask_finds_disc(mode_masks: dict[str, np.ndarray], mode: str) -> None:
    mask = mode_masks[mode]
    subject = INNER & ~TRANSPARENT

    assert mask.shape == (HEIGHT, WIDTH)
    assert (mask[subject] >= 200).mean() >= 0.95
    assert mask[OUTER].mean() <= 5


@pytest.mark.parametrize("mode", sorted(MODES_WITH_ALPHA))
def test_mode_mask_zero_where_transparent(mode_masks: dict[str, np.ndarray], mode: str) -> None:
    assert (mode_masks[mode][TRANSPARENT] == 0).all()


def write_chelsea_with_orientation_6(path: Path) -> None:
    """Store the cat photo turned 90 degrees anticlockwise, tagged to be shown turned back."""
    with Image.open(SAMPLES / "chelsea.jpg") as upright:
        stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(path, quality=95, exif=exif)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    write_chelsea_with_orientation_6(tmp_path / "rotated.jpg")
    with Image.open(SAMPLES / "chelsea.jpg") as upright:
        expected = np.asarray(upright.convert("RGB")).astype(int)

    loaded = load_image(tmp_path / "rotated.jpg")

    assert loaded.rgb.shape == (300, 451, 3)
    assert np.abs(loaded.rgb.astype(int) - expected).mean() < 3


def test_swapped_icc_profile_applied(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "tagged.png", icc_profile=channel_swapped_srgb_profile())

    loaded = load_image(tmp_path / "tagged.png")

    assert loaded.rgb[0, 0, 0] <= 5
    assert loaded.rgb[0, 0, 1] <= 5
    assert loaded.rgb[0, 0, 2] >= 250


def test_srgb_profile_changes_nothing(tmp_path: Path) -> None:
    with Image.open(SAMPLES / "astronaut.jpg") as photo:
        photo.save(tmp_path / "untagged.png")
        photo.save(tmp_path / "tagged.png", icc_profile=srgb_profile())

    untagged = load_image(tmp_path / "untagged.png").rgb.astype(int)
    tagged = load_image(tmp_path / "tagged.png").rgb.astype(int)

    assert np.abs(tagged - untagged).max() <= 1


def test_unusable_profile_gives_notice(tmp_path: Path) -> None:
    lab_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "mismatched.png", icc_profile=lab_profile)

    loaded = load_image(tmp_path / "mismatched.png")

    assert loaded.rgb[0, 0].tolist() == [200, 10, 10]
    assert len(loaded.notices) == 1
    assert "ICC profile" in loaded.notices[0]


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    first = Image.fromarray(rgb_disc())
    second = Image.new("RGB", (WIDTH, HEIGHT), (DARK, DARK, DARK))
    first.save(tmp_path / "animated.gif", save_all=True, append_images=[second], duration=100, loop=0)

    loaded = load_image(tmp_path / "animated.gif")

    assert loaded.rgb[INNER].min() >= BRIGHT - 3
    assert loaded.notices == ["animated file with 2 frames: only the first frame is processed"]


def test_header_bomb_rejected(tmp_path: Path) -> None:
    write_png_header_bomb(tmp_path / "bomb.png", 60000, 60000)

    with pytest.raises(ImageTooLargeError) as caught:
        load_image(tmp_path / "bomb.png")

    message = str(caught.value)
    assert "60000 x 60000" in message
    assert "3600 megapixels" in message
    assert "--max-megapixels" in message
    assert "\n" not in message


def test_pillow_limit_restored(tmp_path: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    write_png_header_bomb(tmp_path / "bomb.png", 60000, 60000)
    Image.new("L", (4, 4)).save(tmp_path / "small.png")

    with pytest.raises(ImageTooLargeError):
        load_image(tmp_path / "bomb.png")
    load_image(tmp_path / "small.png", max_megapixels=1.0)

    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_size_limit_configurable(tmp_path: Path) -> None:
    Image.new("L", (2000, 1000)).save(tmp_path / "two_megapixels.png")

    with pytest.raises(ImageTooLargeError) as caught:
        load_image(tmp_path / "two_megapixels.png", max_megapixels=1.5)

    assert "2000 x 1000" in str(caught.value)


def test_truncated_jpeg_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.open(SAMPLES / "chelsea.jpg").save(buffer, "JPEG", quality=90)
    (tmp_path / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(UserError) as caught:
        load_image(tmp_path / "truncated.jpg")

    assert "damaged or incomplete" in str(caught.value)


def test_text_file_rejected(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image\n")

    with pytest.raises(UserError) as caught:
        load_image(tmp_path / "notes.png")

    assert "not an image format" in str(caught.value)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_image(tmp_path / "absent.png")

    assert "not found" in str(caught.value)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 5), (40, 30)])
def test_tiny_image_loads(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size, (10, 200, 30)).save(tmp_path / "tiny.png")

    loaded = load_image(tmp_path / "tiny.png")

    assert loaded.rgb.shape == (size[1], size[0], 3)
    assert loaded.rgb[0, 0].tolist() == [10, 200, 30]


def layer_samples(channels: int) -> np.ndarray:
    """A 3 x 2 layer of 8-bit samples with the given channel count; alpha, if any, 0 in one pixel."""
    values = np.arange(3 * 2 * channels, dtype=np.uint8).reshape(2, 3, channels) * 9
    if channels in (2, 4):
        values[:, :, -1] = 255
        values[0, 0, -1] = 0
    return values


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("sample", ["u8", "u16", "f32"])
def test_buffer_decodes(channels: int, sample: str) -> None:
    samples = layer_samples(channels)
    if sample == "u8":
        buffer = samples.tobytes()
    elif sample == "u16":
        buffer = (samples.astype("<u2") * 257).tobytes()
    else:
        buffer = (samples.astype("<f4") / 255.0).tobytes()
    colour_channels = 1 if channels in (1, 2) else 3

    rgb, alpha = pixels_from_buffer(buffer, 3, 2, channels, sample)

    expected_colour = samples[:, :, :colour_channels]
    assert rgb.shape == (2, 3, 3)
    assert (rgb == np.broadcast_to(expected_colour, (2, 3, 3))).all()
    if channels in (2, 4):
        assert alpha is not None
        assert (alpha == samples[:, :, -1]).all()
    else:
        assert alpha is None


def test_buffer_float_out_of_range() -> None:
    values = np.asarray([[np.nan, np.inf, -np.inf, -0.5, 1.5, 0.5]], dtype="<f4")

    rgb, alpha = pixels_from_buffer(values.tobytes(), 6, 1, 1, "f32")

    assert rgb[0, :, 0].tolist() == [0, 255, 0, 0, 255, 128]
    assert alpha is None


def test_buffer_opaque_alpha_dropped() -> None:
    samples = np.full((2, 2, 4), 255, dtype=np.uint8)

    _, alpha = pixels_from_buffer(samples.tobytes(), 2, 2, 4, "u8")

    assert alpha is None


def test_buffer_wrong_size_rejected() -> None:
    with pytest.raises(UserError) as caught:
        pixels_from_buffer(b"\x00" * 11, 2, 2, 3, "u8")

    assert "11 bytes, expected 12" in str(caught.value)


def test_buffer_bad_sample_rejected() -> None:
    with pytest.raises(UserError) as caught:
        pixels_from_buffer(b"\x00" * 4, 2, 2, 1, "u12")

    assert "u12" in str(caught.value)
