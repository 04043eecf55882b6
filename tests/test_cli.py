"""Tests of the command line through its real entry point, with the real u2netp and rvm models.

Every run is a new process, as for a user. The options are checked against the plain mask of
the same photo, which one module-wide run computes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from scipy import ndimage

from installed_models import require_models

CHECKOUT = Path(__file__).resolve().parent.parent
ASTRONAUT = CHECKOUT / "samples" / "astronaut.jpg"
CHELSEA = CHECKOUT / "samples" / "chelsea.jpg"
PROGRAM = "ai-remove-background"

# Regions of the 512 x 512 astronaut photo, as (rows, columns): her face, the orange suit of
# her torso, and the top corners, which show the studio background.
FACE = (slice(95, 145), slice(205, 235))
TORSO = (slice(360, 430), slice(110, 200))
TOP_LEFT = (slice(0, 16), slice(0, 16))
TOP_RIGHT = (slice(0, 16), slice(496, 512))


def run_cli(*arguments: object, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; every run must keep tracebacks off stderr."""
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", *map(str, arguments)],
                            capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def photo_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iou(first: np.ndarray, second: np.ndarray, level: int = 128) -> float:
    a, b = first >= level, second >= level
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module", autouse=True)
def models_installed() -> None:
    require_models("u2netp", "rvm")


@pytest.fixture(scope="module")
def baseline_mask(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The astronaut's u2netp mask with every option at its default."""
    target = tmp_path_factory.mktemp("baseline") / "mask.png"
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--mask", "-o", target)
    assert result.returncode == 0, result.stderr
    return read(target)


def mask_with(tmp_path: Path, *options: object) -> np.ndarray:
    """The astronaut's u2netp mask with extra CLI options."""
    target = tmp_path / "mask.png"
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--mask", "-o", target, *options)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return read(target)


def test_baseline_finds_astronaut(baseline_mask: np.ndarray) -> None:
    assert baseline_mask.shape == (512, 512)
    assert baseline_mask[FACE].min() >= 250
    assert baseline_mask[TORSO].min() >= 250
    assert baseline_mask[TOP_LEFT].max() <= 5
    assert baseline_mask[TOP_RIGHT].max() <= 5


def test_default_output_rgba(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "cutout.png")

    assert result.returncode == 0
    assert result.stderr == ""
    with Image.open(tmp_path / "cutout.png") as image:
        assert image.format == "PNG"
        assert image.mode == "RGBA"
        pixels = np.asarray(image)
    solid = (baseline_mask == 0) | (baseline_mask == 255)
    # Solid pixels keep the photo's colours; soft edge pixels get estimated foreground colours.
    assert (pixels[:, :, :3][solid] == photo_pixels(ASTRONAUT)[solid]).all()
    assert (pixels[:, :, 3] == baseline_mask).all()


def test_default_name_beside_input(tmp_path: Path) -> None:
    shutil.copy(ASTRONAUT, tmp_path / "portrait.jpg")

    result = run_cli("portrait.jpg", "--model", "u2netp", cwd=tmp_path)

    assert result.returncode == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["portrait-nobg.png", "portrait.jpg"]
    assert read(tmp_path / "portrait-nobg.png").shape == (512, 512, 4)


def test_mask_output_grey(tmp_path: Path) -> None:
    run_cli(ASTRONAUT, "--model", "u2netp", "--mask", "-o", tmp_path / "mask.png")

    with Image.open(tmp_path / "mask.png") as image:
        assert image.mode == "L"
        assert image.size == (512, 512)


def composite_on(tmp_path: Path, background: str) -> np.ndarray:
    target = tmp_path / "composite.png"
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--background", background, "-o", target)
    assert result.returncode == 0, result.stderr
    with Image.open(target) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


@pytest.mark.parametrize(("background", "colour"), [("white", (255, 255, 255)), ("#20a0ff", (32, 160, 255))])
def test_background_colour(tmp_path: Path, baseline_mask: np.ndarray, background: str,
                           colour: tuple[int, int, int]) -> None:
    pixels = composite_on(tmp_path, background)

    assert pixels.shape == (512, 512, 3)
    assert (pixels[baseline_mask == 255] == photo_pixels(ASTRONAUT)[baseline_mask == 255]).all()
    assert (pixels[baseline_mask == 0] == colour).all()


def test_background_image(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    Image.new("RGB", (300, 200), (10, 120, 240)).save(tmp_path / "backdrop.png")

    pixels = composite_on(tmp_path, str(tmp_path / "backdrop.png"))

    assert (pixels[baseline_mask == 255] == photo_pixels(ASTRONAUT)[baseline_mask == 255]).all()
    assert (pixels[baseline_mask == 0] == (10, 120, 240)).all()


def test_background_image_16_bit(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    # 0x8080 in 16 bits is 128 in 8 bits.
    Image.fromarray(np.full((64, 64), 0x8080, dtype=np.uint16)).save(tmp_path / "grey16.png")

    pixels = composite_on(tmp_path, str(tmp_path / "grey16.png"))

    assert (pixels[baseline_mask == 0] == (128, 128, 128)).all()


def test_background_image_missing(tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--background", tmp_path / "absent.png",
                     "-o", tmp_path / "out.png")

    assert result.returncode == 1
    assert "absent.png not found" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_background_blur(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    photo = photo_pixels(ASTRONAUT)

    pixels = composite_on(tmp_path, "blur")

    subject = baseline_mask == 255
    # Pixels whose whole 5 x 5 neighbourhood is background, away from the subject's edge.
    background = ndimage.binary_erosion(baseline_mask == 0, iterations=2)
    photo_gradient = np.abs(np.diff(photo.astype(int), axis=1))[background[:, 1:]].mean()
    blurred_gradient = np.abs(np.diff(pixels.astype(int), axis=1))[background[:, 1:]].mean()
    assert (pixels[subject] == photo[subject]).all()
    assert blurred_gradient < photo_gradient / 2
    assert np.abs(pixels[background].astype(int) - photo[background]).mean() > 2


def test_model_rvm(tmp_path: Path) -> None:
    target = tmp_path / "mask.png"

    result = run_cli(ASTRONAUT, "--model", "rvm", "--mask", "-o", target)

    mask = read(target)
    assert result.returncode == 0
    assert mask[FACE].min() >= 250
    assert mask[TORSO].min() >= 250
    assert mask[TOP_LEFT].max() <= 5
    assert mask[TOP_RIGHT].max() <= 5


def test_no_refine(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    mask = mask_with(tmp_path, "--no-refine")

    assert mask[FACE].min() >= 250
    assert mask[TOP_LEFT].max() <= 5
    assert iou(mask, baseline_mask) > 0.9
    assert (mask != baseline_mask).sum() > 1000


def test_threshold_binary(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    mask = mask_with(tmp_path, "--threshold", 128)

    assert set(np.unique(mask).tolist()) == {0, 255}
    assert (mask == np.where(baseline_mask >= 128, 255, 0)).all()


def subject_area(mask: np.ndarray) -> int:
    return int((mask >= 128).sum())


def edge_length(mask: np.ndarray) -> int:
    """Pixels of the subject (at level 128) that touch the background."""
    inside = mask >= 128
    return int((inside & ~ndimage.binary_erosion(inside)).sum())


def test_grow_adds_band(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    mask = mask_with(tmp_path, "--grow", 5)

    added = subject_area(mask) - subject_area(baseline_mask)
    assert (mask[baseline_mask >= 128] >= 128).all()
    assert added >= 3 * edge_length(baseline_mask)
    assert added <= 7 * edge_length(baseline_mask)


def test_shrink_removes_band(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    mask = mask_with(tmp_path, "--grow", -5)

    removed = subject_area(baseline_mask) - subject_area(mask)
    assert (baseline_mask[mask >= 128] >= 128).all()
    assert removed >= 3 * edge_length(baseline_mask)
    assert removed <= 7 * edge_length(baseline_mask)
    assert mask[FACE].min() >= 250


def test_feather_softens_edge(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    binary = np.where(baseline_mask >= 128, 255, 0).astype(np.uint8)

    mask = mask_with(tmp_path, "--threshold", 128, "--feather", 8)

    partial = int(((mask > 0) & (mask < 255)).sum())
    # A radius of 8 is a Gaussian of standard deviation 4: a ramp about 16 pixels wide.
    assert partial >= 8 * edge_length(binary)
    assert mask[FACE].min() >= 250
    assert mask[TOP_LEFT].max() <= 5
    assert abs(subject_area(mask) - subject_area(binary)) < 0.02 * subject_area(binary)


def test_invert_complements(tmp_path: Path, baseline_mask: np.ndarray) -> None:
    mask = mask_with(tmp_path, "--invert")

    assert (mask == 255 - baseline_mask).all()


def test_hint_mask_kept(tmp_path: Path) -> None:
    hint = np.full((512, 512), 128, dtype=np.uint8)
    hint[:100, :100] = 255  # background that the user marks as subject
    hint[95:145, 205:235] = 0  # the face, marked as background
    Image.fromarray(hint).save(tmp_path / "hint.png")

    mask = mask_with(tmp_path, "--hint-mask", tmp_path / "hint.png")

    assert (mask[:100, :100] == 255).all()
    assert (mask[FACE] == 0).all()
    assert mask[TORSO].min() >= 250


def test_folder_to_output_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "photos"
    inputs.mkdir()
    shutil.copy(ASTRONAUT, inputs / "astronaut.jpg")
    shutil.copy(CHELSEA, inputs / "chelsea.jpg")
    (inputs / "notes.txt").write_text("not a photo\n")

    result = run_cli(inputs, "--model", "u2netp", "-o", tmp_path / "cutouts")

    assert result.returncode == 0
    assert result.stderr == ""
    assert sorted(path.name for path in (tmp_path / "cutouts").iterdir()) == ["astronaut.png", "chelsea.png"]
    assert read(tmp_path / "cutouts" / "chelsea.png").shape == (300, 451, 4)


def test_progress_bar_on_terminal(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl", reason="pseudo-terminals need a POSIX system")
    pty = pytest.importorskip("pty")
    termios = pytest.importorskip("termios")
    inputs = tmp_path / "photos"
    inputs.mkdir()
    shutil.copy(ASTRONAUT, inputs / "one.jpg")
    shutil.copy(CHELSEA, inputs / "two.jpg")
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, in which tqdm draws an empty bar: make it 80 x 24.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    process = subprocess.Popen([sys.executable, "-m", "ai_remove_background.cli", str(inputs), "--model", "u2netp",
                                "-o", str(tmp_path / "out")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # Linux reports the closed terminal as EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    status = process.wait(timeout=600)
    terminal_output = b"".join(chunks).decode("utf-8", "replace")

    assert status == 0
    assert "2/2" in terminal_output
    assert "image" in terminal_output
    assert "Traceback" not in terminal_output


def test_input_never_overwritten(tmp_path: Path) -> None:
    Image.open(ASTRONAUT).save(tmp_path / "photo.png")
    digest = sha256(tmp_path / "photo.png")

    result = run_cli(tmp_path / "photo.png", "--model", "u2netp", "-o", tmp_path / "photo.png", "--overwrite")

    assert result.returncode == 1
    assert "is an input file" in result.stderr
    assert sha256(tmp_path / "photo.png") == digest


def test_default_name_never_overwrites_input(tmp_path: Path) -> None:
    shutil.copy(ASTRONAUT, tmp_path / "photo.jpg")
    Image.open(CHELSEA).save(tmp_path / "photo-nobg.png")
    digest = sha256(tmp_path / "photo-nobg.png")

    result = run_cli(tmp_path / "photo.jpg", tmp_path / "photo-nobg.png", "--model", "u2netp", "--overwrite")

    assert result.returncode == 1
    assert "is an input file" in result.stderr
    assert sha256(tmp_path / "photo-nobg.png") == digest
    assert (tmp_path / "photo-nobg-nobg.png").is_file()


def test_existing_output_kept(tmp_path: Path) -> None:
    (tmp_path / "out.png").write_bytes(b"earlier result")

    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.png")

    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert len(lines) == 2
    assert "already exists" in lines[0]
    assert "--overwrite" in lines[0]
    assert lines[1] == f"{PROGRAM}: 1 of 1 images failed"
    assert (tmp_path / "out.png").read_bytes() == b"earlier result"


def test_overwrite_replaces_output(tmp_path: Path) -> None:
    (tmp_path / "out.png").write_bytes(b"earlier result")

    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.png", "--overwrite")

    assert result.returncode == 0
    assert read(tmp_path / "out.png").shape == (512, 512, 4)
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]


def test_failed_input_among_good(tmp_path: Path) -> None:
    inputs = tmp_path / "photos"
    inputs.mkdir()
    shutil.copy(ASTRONAUT, inputs / "a.jpg")
    (inputs / "b.png").write_text("this is text, not a PNG\n")
    shutil.copy(CHELSEA, inputs / "c.jpg")

    result = run_cli(inputs, "--model", "u2netp", "-o", tmp_path / "out")

    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert lines == [
        f"{PROGRAM}: {inputs / 'b.png'}: not an image format Pillow can read: convert it to PNG, JPEG or TIFF",
        f"{PROGRAM}: 1 of 3 images failed",
    ]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_missing_input_named(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "absent.jpg", "--model", "u2netp")

    assert result.returncode == 1
    assert f"{tmp_path / 'absent.jpg'}: file not found" in result.stderr


@pytest.mark.parametrize(("option", "value"), [("--feather", "nan"), ("--grow", "inf"), ("--feather", "-inf"),
                                               ("--max-megapixels", "0"), ("--max-megapixels", "nan"),
                                               ("--threshold", "300"), ("--threads", "100000")])
def test_invalid_number_rejected(tmp_path: Path, option: str, value: str) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", f"{option}={value}", "-o", tmp_path / "out.png")

    assert result.returncode == 2
    assert value in result.stderr.splitlines()[-1]
    assert not (tmp_path / "out.png").exists()


def test_jpeg_output_needs_background(tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.jpg")

    assert result.returncode == 1
    assert "cannot store transparency" in result.stderr
    assert not (tmp_path / "out.jpg").exists()


def test_jpeg_output_with_background(tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--background", "white", "-o", tmp_path / "out.jpg")

    assert result.returncode == 0
    with Image.open(tmp_path / "out.jpg") as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"


def test_mask_and_background_exclusive(tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--mask", "--background", "white", "-o", tmp_path / "out.png")

    assert result.returncode == 2
    assert result.stderr == f"{PROGRAM}: --mask and --background exclude each other: choose one\n"


def test_no_input_given() -> None:
    result = run_cli()

    assert result.returncode == 2
    assert "no input given" in result.stderr


def test_list_models() -> None:
    result = run_cli("--list-models")

    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert [line.split(":")[0] for line in lines] == ["isnet (default)", "rvm", "u2netp"]
    assert "installed" in lines[2]


def write_orientation_and_profile_cases(folder: Path) -> None:
    """Write the cat upright and turned with EXIF orientation 6, and the astronaut with and without
    an sRGB profile."""
    with Image.open(CHELSEA) as upright:
        upright.save(folder / "upright.jpg", quality=95)
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        upright.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.jpg", quality=95, exif=exif)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(ASTRONAUT) as photo:
        photo.save(folder / "untagged.png")
        photo.save(folder / "tagged.png", icc_profile=profile)


@pytest.fixture(scope="module")
def case_masks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("cases")
    write_orientation_and_profile_cases(folder)
    output = tmp_path_factory.mktemp("case_masks")
    result = run_cli(folder, "--model", "u2netp", "--mask", "-o", output)
    assert result.returncode == 0, result.stderr
    return {path.stem: read(path) for path in output.iterdir()}


def test_exif_rotated_displayed_orientation(case_masks: dict[str, np.ndarray]) -> None:
    assert case_masks["rotated"].shape == (300, 451)
    assert iou(case_masks["rotated"], case_masks["upright"]) >= 0.95


def test_srgb_tag_same_mask(case_masks: dict[str, np.ndarray]) -> None:
    difference = np.abs(case_masks["tagged"].astype(int) - case_masks["untagged"])

    assert difference.max() <= 1


def test_output_with_trailing_slash_is_folder(tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "--mask", "-o", f"{tmp_path / 'new-folder'}/")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new-folder" / "astronaut.png").is_file()
