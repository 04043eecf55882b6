"""Awkward input files through the real CLI: a correct result, or one line naming the file,
the problem and what to do. Never a traceback, and never a change to the input file.

The files are generated here, one of each kind that breaks image tools. When a folder of real
awkward files exists, a second test runs the CLI over it in place.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from file_writers import write_png16, write_png_header_bomb, write_tiff16_rgba
from installed_models import require_models

PROGRAM = "ai-remove-background"
# Real awkward files from the test fixtures of public projects, read in place when present.
REAL_FILES_FOLDER = Path("/work/shared/nasty")

# The synthetic photo: a bright disc (the subject) left of centre on a dark background, so a
# mask that is mirrored or turned is caught.
WIDTH, HEIGHT = 160, 96
ROWS, COLUMNS = np.mgrid[:HEIGHT, :WIDTH]
DISTANCE = np.hypot(COLUMNS - 56, ROWS - 48)
DISC = DISTANCE < 28
INNER = DISTANCE < 22
OUTER = DISTANCE > 36
# The files with alpha are transparent left of this column, which cuts through the disc.
TRANSPARENT = COLUMNS < 44


def grey_disc(bright: int = 230, dark: int = 20, dtype: type = np.uint8) -> np.ndarray:
    return np.where(DISC, bright, dark).astype(dtype)


def rgb_disc() -> Image.Image:
    return Image.fromarray(np.dstack([grey_disc()] * 3))


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def write_cmyk_jpeg(path: Path) -> None:
    rgb_disc().convert("CMYK").save(path, quality=95)


def write_rgb16_png(path: Path) -> None:
    write_png16(path, np.dstack([grey_disc(60000, 3000, np.uint16)] * 3))


def write_palette_trns(path: Path) -> None:
    indices = np.where(DISC, 1, 0).astype(np.uint8)
    indices[TRANSPARENT] = 2
    image = Image.fromarray(indices, mode="P")
    image.putpalette([20, 20, 20, 230, 230, 230, 230, 230, 230])
    image.save(path, transparency=2)


def write_exif_rotated_jpeg(path: Path) -> None:
    """Store the photo turned 90 degrees anticlockwise, tagged to be shown turned back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rgb_disc().transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def write_png_bomb(path: Path) -> None:
    write_png_header_bomb(path, 60000, 60000)


def write_gif_bomb(path: Path) -> None:
    """Write a 35-byte GIF whose screen and only image claim 65535 x 65535 pixels."""
    screen = struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + bytes(6)  # a 2-colour palette, black
    image = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + bytes([2, 2, 0x4C, 0x01, 0])
    path.write_bytes(b"GIF89a" + screen + image + b";")


def write_one_pixel_grey(path: Path) -> None:
    Image.new("L", (1, 1), 128).save(path)


def write_animated_gif(path: Path) -> None:
    """Write two frames: the disc, then the disc mirrored to the right half."""
    first = rgb_disc()
    second = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)


def write_rgba16_tiff_icc(path: Path) -> None:
    alpha = np.where(TRANSPARENT, 0, 65535).astype(np.uint16)
    write_tiff16_rgba(path, np.dstack([grey_disc(60000, 3000, np.uint16)] * 3 + [alpha]), srgb_profile())


def write_progressive_jpeg_icc(path: Path) -> None:
    rgb_disc().save(path, quality=90, progressive=True, icc_profile=srgb_profile())


def write_truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    rgb_disc().save(buffer, "JPEG", quality=90, progressive=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])


WRITERS = {
    "cmyk.jpg": write_cmyk_jpeg,
    "rgb16.png": write_rgb16_png,
    "palette_trns.png": write_palette_trns,
    "exif_rotated.jpg": write_exif_rotated_jpeg,
    "png_bomb.png": write_png_bomb,
    "gif_bomb.gif": write_gif_bomb,
    "one_pixel_grey.png": write_one_pixel_grey,
    "animated.gif": write_animated_gif,
    "rgba16_icc.tif": write_rgba16_tiff_icc,
    "progressive_icc.jpg": write_progressive_jpeg_icc,
    "truncated.jpg": write_truncated_jpeg,
}
DISC_FILES = ["cmyk.jpg", "rgb16.png", "palette_trns.png", "exif_rotated.jpg", "animated.gif", "rgba16_icc.tif",
              "progressive_icc.jpg"]
FILES_WITH_ALPHA = ["palette_trns.png", "rgba16_icc.tif"]
FAILING_FILES = {"png_bomb.png", "gif_bomb.gif", "truncated.jpg"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*arguments: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", *map(str, arguments)],
                            capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module", autouse=True)
def models_installed() -> None:
    require_models("u2netp")


class Run:
    """One CLI run over a folder: its result, the input digests before and after, and the output folder."""

    def __init__(self, inputs: Path, output: Path) -> None:
        self.inputs = inputs
        self.output = output
        self.digests_before = {path.name: sha256(path) for path in inputs.iterdir()}
        self.result = run_cli(inputs, "--model", "u2netp", "-o", output)
        self.digests_after = {path.name: sha256(path) for path in inputs.iterdir()}
        self.lines = self.result.stderr.splitlines()

    def lines_about(self, name: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"{PROGRAM}: {self.inputs / name}: ")]

    def output_pixels(self, name: str) -> np.ndarray:
        with Image.open(self.output / (Path(name).stem + ".png")) as image:
            assert image.mode == "RGBA"
            return np.asarray(image)


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    inputs = tmp_path_factory.mktemp("nasty")
    for name, writer in WRITERS.items():
        writer(inputs / name)
    return Run(inputs, tmp_path_factory.mktemp("nasty_out"))


def test_inputs_unchanged(generated_run: Run) -> None:
    assert generated_run.digests_after == generated_run.digests_before


def test_failures_counted(generated_run: Run) -> None:
    assert generated_run.result.returncode == 1
    assert generated_run.lines[-1] == f"{PROGRAM}: {len(FAILING_FILES)} of {len(WRITERS)} images failed"


def test_outputs_only_for_good_files(generated_run: Run) -> None:
    written = sorted(path.name for path in generated_run.output.iterdir())
    expected = sorted(Path(name).stem + ".png" for name in WRITERS if name not in FAILING_FILES)

    assert written == expected


@pytest.mark.parametrize("name", DISC_FILES)
def test_disc_cut_out(generated_run: Run, name: str) -> None:
    alpha = generated_run.output_pixels(name)[:, :, 3]
    subject = INNER & ~TRANSPARENT if name in FILES_WITH_ALPHA else INNER

    assert alpha.shape == (HEIGHT, WIDTH)
    assert (alpha[subject] >= 200).mean() >= 0.95
    assert alpha[OUTER].mean() <= 5


@pytest.mark.parametrize("name", FILES_WITH_ALPHA)
def test_transparency_kept(generated_run: Run, name: str) -> None:
    assert (generated_run.output_pixels(name)[:, :, 3][TRANSPARENT] == 0).all()


@pytest.mark.parametrize("name", ["png_bomb.png", "gif_bomb.gif"])
def test_bomb_one_line(generated_run: Run, name: str) -> None:
    lines = generated_run.lines_about(name)
    width = {"png_bomb.png": 60000, "gif_bomb.gif": 65535}[name]

    assert len(lines) == 1
    assert f"image is {width} x {width}" in lines[0]
    assert "over the limit of 150" in lines[0]
    assert "--max-megapixels" in lines[0]


def test_truncated_one_line(generated_run: Run) -> None:
    lines = generated_run.lines_about("truncated.jpg")

    assert len(lines) == 1
    assert "damaged or incomplete" in lines[0]
    assert "re-export or re-download it" in lines[0]


def test_animated_notice(generated_run: Run) -> None:
    assert generated_run.lines_about("animated.gif") == [
        f"{PROGRAM}: {generated_run.inputs / 'animated.gif'}: animated file with 2 frames: only the first frame is processed"
    ]


def test_one_pixel_output(generated_run: Run) -> None:
    assert generated_run.output_pixels("one_pixel_grey.png").shape == (1, 1, 4)


def test_no_other_messages(generated_run: Run) -> None:
    about_files = [line for name in WRITERS for line in generated_run.lines_about(name)]

    assert len(about_files) == len(generated_run.lines) - 1


@pytest.mark.skipif(not REAL_FILES_FOLDER.is_dir(), reason=f"{REAL_FILES_FOLDER} is absent")
def test_real_files_in_place(tmp_path: Path) -> None:
    run = Run(REAL_FILES_FOLDER, tmp_path / "out")
    sizes = {"animated.gif": (245, 245), "cmyk.jpg": (100, 100), "exif_orientation6_photo.jpg": (1200, 1800),
             "one_pixel_gray.png": (1, 1), "palette_trns.png": (64, 64), "progressive_icc_photo.jpg": (1440, 2160),
             "rgb16.png": (32, 32), "tiff_rgba16_icc.tiff": (40, 100)}

    assert run.digests_after == run.digests_before
    assert run.result.returncode == 1
    assert run.lines[-1] == f"{PROGRAM}: 2 of 10 images failed"
    assert len(run.lines_about("huge_dims_decompression_bomb.gif")) == 1
    assert "image is 65535 x 66601" in run.lines_about("huge_dims_decompression_bomb.gif")[0]
    assert len(run.lines_about("truncated.jpg")) == 1
    assert "damaged or incomplete" in run.lines_about("truncated.jpg")[0]
    for name, shape in sizes.items():
        assert run.output_pixels(name).shape[:2] == shape, name
    for name in ("palette_trns.png", "tiff_rgba16_icc.tiff"):
        with Image.open(REAL_FILES_FOLDER / name) as image:
            transparent = np.asarray(image.convert("RGBA"))[:, :, 3] == 0
        assert transparent.any(), name
        assert (run.output_pixels(name)[:, :, 3][transparent] == 0).all(), name
