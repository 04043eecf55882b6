"""Byte-level conversions between Krita's pixel layouts and the worker's (standard library only).

Krita's `Node.pixelData()` returns samples in the machine's byte order, with RGBA U8 and U16
stored as BGRA and RGBA F16 and F32 stored as RGBA. The worker expects RGBA or grey + alpha,
little-endian. Nothing here touches the Krita API, so it can run in any thread.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import NamedTuple

# Krita colour depth name: (worker sample name or None, bytes per sample, struct format character).
DEPTHS = {
    "U8": ("u8", 1, "B"),
    "U16": ("u16", 2, "H"),
    "F16": (None, 2, "e"),
    "F32": ("f32", 4, "f"),
}
# Rows converted per step when scaling alpha, to bound the memory of the Python number lists.
ROWS_PER_CHUNK = 64


class PixelLayout(NamedTuple):
    """Position of the alpha sample in one pixel of a Krita layer."""

    pixel_bytes: int
    alpha_offset: int
    depth: str


def bgra_to_rgba(data: bytes, sample_bytes: int) -> bytes:
    """Swap the blue and red samples of interleaved 4-channel pixels of any sample size."""
    pixel_bytes = 4 * sample_bytes
    if len(data) % pixel_bytes:
        raise ValueError(f"pixel buffer of {len(data)} bytes is not a whole number of {pixel_bytes}-byte pixels")
    swapped = bytearray(data)
    for byte in range(sample_bytes):
        swapped[byte::pixel_bytes] = data[2 * sample_bytes + byte::pixel_bytes]
        swapped[2 * sample_bytes + byte::pixel_bytes] = data[byte::pixel_bytes]
    return bytes(swapped)


def native_to_little_endian(data: bytes, sample_bytes: int) -> bytes:
    """Return samples in little-endian order, as the worker protocol requires."""
    if sys.byteorder == "little" or sample_bytes == 1:
        return data
    samples = array({2: "H", 4: "f"}[sample_bytes])
    samples.frombytes(data)
    samples.byteswap()
    return samples.tobytes()


def scale_alpha(data: bytes, width: int, height: int, layout: PixelLayout, mask: bytes) -> bytes:
    """Multiply the alpha sample of every pixel by mask / 255, keeping the colour samples.

    `data` is one layer's pixels in Krita's own layout (any colour model), `mask` one byte per
    pixel. Used to bake the mask into a new layer without converting its colour space.
    """
    if len(data) != width * height * layout.pixel_bytes:
        raise ValueError(
            f"pixel buffer has {len(data)} bytes, expected {width * height * layout.pixel_bytes} "
            f"for {width}x{height} pixels of {layout.pixel_bytes} bytes"
        )
    if len(mask) != width * height:
        raise ValueError(f"mask has {len(mask)} bytes, expected {width * height}")
    _, sample_bytes, code = DEPTHS[layout.depth]
    result = bytearray(data)
    if code == "B":
        alpha = data[layout.alpha_offset::layout.pixel_bytes]
        result[layout.alpha_offset::layout.pixel_bytes] = bytes(
            (value * weight + 127) // 255 for value, weight in zip(alpha, mask)
        )
        return bytes(result)

    samples_per_pixel = layout.pixel_bytes // sample_bytes
    alpha_index = layout.alpha_offset // sample_bytes
    row_bytes = width * layout.pixel_bytes
    for first_row in range(0, height, ROWS_PER_CHUNK):
        rows = min(ROWS_PER_CHUNK, height - first_row)
        start = first_row * row_bytes
        chunk_format = f"={rows * width * samples_per_pixel}{code}"
        samples = list(struct.unpack(chunk_format, data[start:start + rows * row_bytes]))
        weights = mask[first_row * width:(first_row + rows) * width]
        alpha = samples[alpha_index::samples_per_pixel]
        if code == "H":
            scaled = [(value * weight + 127) // 255 for value, weight in zip(alpha, weights)]
        else:
            scaled = [value * weight / 255.0 for value, weight in zip(alpha, weights)]
        samples[alpha_index::samples_per_pixel] = scaled
        result[start:start + rows * row_bytes] = struct.pack(chunk_format, *samples)
    return bytes(result)

