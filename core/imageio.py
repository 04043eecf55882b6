"""Read photos of any mode with Pillow, and raw editor pixels, into 8-bit sRGB plus alpha.

Every path in this module returns the same pair: an RGB uint8 array in sRGB for the model and
for compositing, and the image's own alpha (uint8) or None when it has none.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, UserError

log = logging.getLogger(__name__)

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


def check_size(width: int, height: int, max_megapixels: float, name: str) -> None:
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageTooLargeError(
            f"{name} is {width} x {height} ({megapixels:.0f} megapixels), over the limit of "
            f"{max_megapixels:g}: scale it down, or raise the limit with --max-megapixels"
        )


def load_image(path: Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> LoadedImage:
    """Decode a photo: first frame, EXIF orientation applied, converted to sRGB, alpha kept."""
    Image.MAX_IMAGE_PIXELS = int(max_megapixels * 1e6)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise UserError("file not found: check the path") from None
    except IsADirectoryError:
        raise UserError("is a folder, not an image") from None
    except PermissionError:
        raise UserError("permission denied: check the file's read permission") from None
    except UnidentifiedImageError:
        raise UserError("not an image format Pillow can read: convert it to PNG, JPEG or TIFF") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"image claims too many pixels ({error}): if it is genuine, raise the limit with --max-megapixels"
        ) from None

    with image:
        check_size(image.width, image.height, max_megapixels, "image")
        notices = []
        frame_count = getattr(image, "n_frames", 1)
        if frame_count > 1:
            notices.append(f"animated file with {frame_count} frames: only the first frame is processed")
        try:
            image.seek(0)
            image.load()
            oriented = ImageOps.exif_transpose(image)
        except OSError as error:
            raise UserError(f"the file is damaged or incomplete ({error}): re-export or re-download it") from None
        except (ValueError, SyntaxError) as error:
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
        log.warning("ignoring the embedded ICC profile, which could not be applied: %s", error)
        return image.convert(output_mode)


def to_srgb_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (RGB uint8 in sRGB, alpha uint8 or None) for a Pillow image of any mode."""
    mode = image.mode
    alpha: np.ndarray | None = None

    if mode in DEEP_GREY_MODES:
        grey = _deep_grey_to_u8(image)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2), None

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
