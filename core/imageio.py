"""Read photos of any mode with Pillow, and raw editor pixels, into 8-bit sRGB plus alpha.

Every path in this module returns the same pair: an RGB uint8 array in sRGB for the model and
for compositing, and the image's own alpha (uint8) or None when it has none.
"""

from __future__ import annotations

import io
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, UserError

DEFAULT_MAX_MEGAPIXELS = 150.0
SAMPLE_DTYPES = {"u8": np.dtype("u1"), "u16": np.dtype("<u2"), "f32": np.dtype("<f4")}
EIGHT_BIT_MAX = 255.0
SIXTEEN_BIT_MAX = 65535.0
# Modes that Pillow stores with more than 8 bits in one grey channel.
DEEP_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (height, width, 3) uint8, sRGB
    alpha: np.ndarray | None  # (height, width) uint8, or None when the image is opaque
    source_mode: str
    notices: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def check_size(
    width: int, height: int, max_megapixels: float, name: str, how_to_raise: str = "with --max-megapixels"
) -> None:
    # Whole-number arithmetic, because a worker request may give any JSON integer as a size.
    pixels = width * height
    if pixels > max_megapixels * 1e6:
        megapixels = pixels / 1e6
        # Three significant digits for small layers (0.262), whole numbers from 100 on (3600).
        megapixels_text = f"{megapixels:.0f}" if megapixels >= 100 else f"{megapixels:.3g}"
        raise ImageTooLargeError(
            f"{name} is {width} x {height} ({megapixels_text} megapixels), over the limit of "
            f"{max_megapixels:g}: scale it down, or raise the limit {how_to_raise}"
        )


@contextmanager
def _pillow_pixel_limit(pixels: int | None) -> Iterator[None]:
    """Set Pillow's decompression-bomb limit (None turns it off) for the block, then restore it."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _open_image(path: Path) -> Image.Image:
    """Open `path`, reading its header only; raise a UserError that states why it cannot be opened."""
    try:
        # Pillow's own size check is off while the header is read, so that check_size can reject
        # a huge image with its dimensions in one line instead of Pillow's DecompressionBombError.
        with _pillow_pixel_limit(None):
            return Image.open(path)
    except FileNotFoundError:
        raise UserError("file not found: check the path") from None
    except IsADirectoryError:
        raise UserError("is a folder, not an image") from None
    except PermissionError:
        raise UserError("permission denied: check the file's read permission") from None
    except UnidentifiedImageError:
        raise UserError("not an image format Pillow can read: convert it to PNG, JPEG or TIFF") from None
    except (OSError, EOFError) as error:
        # Plug-ins raise plain OSError for a damaged header ("Truncated File Read"), and the
        # operating system for a failed read.
        raise UserError(f"the file could not be read ({error}): re-export or re-download it") from None


def _count_frames(image: Image.Image, notices: list[str]) -> None:
    """Add a notice when the file has more than one frame, or when its frames cannot be counted."""
    try:
        frame_count = getattr(image, "n_frames", 1)
    except (OSError, EOFError, ValueError, SyntaxError, TypeError, struct.error) as error:
        notices.append(
            f"the frames after the first could not be read ({error}): only the first frame is processed"
        )
        return
    if frame_count > 1:
        notices.append(f"animated file with {frame_count} frames: only the first frame is processed")


def load_image(path: Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> LoadedImage:
    """Decode a photo: first frame, EXIF orientation applied, converted to sRGB, alpha kept.

    Warnings that Pillow gives while reading the file, such as corrupt EXIF data, become notices.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = _decode(path, max_megapixels)
    for message in dict.fromkeys(str(warning.message).strip() for warning in caught):
        loaded.notices.append(message)
    return loaded


def _decode(path: Path, max_megapixels: float) -> LoadedImage:
    image = _open_image(path)
    with image:
        check_size(image.width, image.height, max_megapixels, "image")
        notices: list[str] = []
        try:
            # Pillow checks the size of each frame and sub-image again while decoding them.
            with _pillow_pixel_limit(int(max_megapixels * 1e6)):
                _count_frames(image, notices)
                image.seek(0)
                image.load()
                oriented = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(
                f"a frame of the image is over the limit of {max_megapixels:g} megapixels ({error}): "
                "raise the limit with --max-megapixels if the file is genuine"
            ) from None
        except (OSError, EOFError) as error:
            raise UserError(f"the file is damaged or incomplete ({error}): re-export or re-download it") from None
        except (ValueError, SyntaxError, TypeError, struct.error) as error:
            raise UserError(f"the file could not be decoded ({error}): re-export it as PNG or JPEG") from None
        rgb, alpha = to_srgb_arrays(oriented)
        return LoadedImage(rgb=rgb, alpha=alpha, source_mode=image.mode, notices=notices)


def _deep_grey_to_u8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grey image to 8 bits."""
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        scale = EIGHT_BIT_MAX / SIXTEEN_BIT_MAX
    elif image.mode == "F" and values.size and float(values.max()) <= 1.0:
        scale = EIGHT_BIT_MAX  # floats in 0..1
    elif values.size and float(values.max()) > EIGHT_BIT_MAX:
        scale = EIGHT_BIT_MAX / SIXTEEN_BIT_MAX  # 32-bit integers holding 16-bit samples, as PNG and TIFF do
    else:
        scale = 1.0
    return np.clip(np.rint(values * scale), 0, EIGHT_BIT_MAX).astype(np.uint8)


def _convert_with_profile(image: Image.Image, output_mode: str) -> Image.Image:
    """Convert an image with an embedded ICC profile to sRGB; fall back to a plain conversion."""
    profile_bytes = image.info.get("icc_profile")
    if not profile_bytes:
        return image.convert(output_mode)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile_bytes))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        # A warning, so that load_image reports it as a notice beside the file's name.
        warnings.warn(f"ignoring the embedded ICC profile, which could not be applied: {error}", stacklevel=2)
        return image.convert(output_mode)


def to_srgb_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (RGB uint8 in sRGB, alpha uint8 or None) for a Pillow image of any mode."""
    mode = image.mode
    alpha: np.ndarray | None = None

    if mode in DEEP_GREY_MODES:
        grey = _deep_grey_to_u8(image)
        # A 16-bit grey PNG marks one grey value as transparent in its tRNS chunk.
        transparent_value = image.info.get("transparency")
        if isinstance(transparent_value, int) and not isinstance(transparent_value, bool):
            alpha = np.where(np.asarray(image) == transparent_value, 0, 255).astype(np.uint8)
            if bool((alpha == 255).all()):
                alpha = None
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2), alpha

    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "RGB" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "L" and "transparency" in image.info:
        image = image.convert("LA")

    if image.mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A")).copy()
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
        if image.mode == "L" and "icc_profile" not in image.info:
            image = image.convert("RGB")

    if image.mode == "LAB":
        converted = ImageCms.applyTransform(
            image,
            ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"),
        )
    elif image.mode in ("RGB", "CMYK", "L"):
        converted = _convert_with_profile(image, "RGB")
    else:
        converted = image.convert("RGB")

    rgb = np.asarray(converted, dtype=np.uint8)
    if alpha is not None and bool((alpha == 255).all()):
        alpha = None
    return np.ascontiguousarray(rgb), alpha


def pixels_from_buffer(
    buffer: bytes, width: int, height: int, channels: int, sample: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an editor layer's raw interleaved pixels (sRGB-encoded) into RGB uint8 and alpha."""
    if sample not in SAMPLE_DTYPES:
        raise UserError(f"invalid sample type {sample!r}: expected one of {', '.join(SAMPLE_DTYPES)}")
    if channels not in (1, 2, 3, 4):
        raise UserError(f"invalid channel count {channels}: expected 1 to 4")
    dtype = SAMPLE_DTYPES[sample]
    expected = width * height * channels * dtype.itemsize
    if len(buffer) != expected:
        raise UserError(f"pixel data has {len(buffer)} bytes, expected {expected} for {width} x {height} x {channels} {sample}")
    values = np.frombuffer(buffer, dtype=dtype).reshape(height, width, channels)
    if sample == "u8":
        samples = values
    elif sample == "u16":
        samples = np.rint(values.astype(np.float32) * (EIGHT_BIT_MAX / SIXTEEN_BIT_MAX)).astype(np.uint8)
    else:
        finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        samples = np.rint(np.clip(finite, 0.0, 1.0) * EIGHT_BIT_MAX).astype(np.uint8)

    colour_channels = 1 if channels in (1, 2) else 3
    colour = samples[:, :, :colour_channels]
    if colour_channels == 1:
        colour = np.repeat(colour, 3, axis=2)
    alpha = samples[:, :, colour_channels].copy() if channels in (2, 4) else None
    if alpha is not None and bool((alpha == 255).all()):
        alpha = None
    return np.ascontiguousarray(colour), alpha
