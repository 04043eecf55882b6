"""Read 8-bit and 16-bit RGB(A) PNG files at full precision (standard library and numpy).

Pillow reduces 16-bit RGB PNGs to 8 bits by dropping the low byte, while the engine rounds
16-bit samples to the nearest 8-bit level. The Krita tests build reference masks from Krita's
16-bit exports, so they need the rounded values.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # PNG colour type: samples per pixel (RGB, RGBA)


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distance_left, distance_up, distance_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if distance_left <= distance_up and distance_left <= distance_up_left:
        return left
    return up if distance_up <= distance_up_left else up_left


def _unfilter(data: bytes, height: int, stride: int, pixel_bytes: int) -> bytearray:
    output = bytearray(height * stride)
    previous = bytearray(stride)
    position = 0
    for row in range(height):
        kind = data[position]
        line = bytearray(data[position + 1:position + 1 + stride])
        position += 1 + stride
        if kind == 1:
            for index in range(pixel_bytes, stride):
                line[index] = (line[index] + line[index - pixel_bytes]) & 0xFF
        elif kind == 2:
            line = bytearray((value + above) & 0xFF for value, above in zip(line, previous))
        elif kind == 3:
            for index in range(stride):
                left = line[index - pixel_bytes] if index >= pixel_bytes else 0
                line[index] = (line[index] + ((left + previous[index]) >> 1)) & 0xFF
        elif kind == 4:
            for index in range(stride):
                left = line[index - pixel_bytes] if index >= pixel_bytes else 0
                up_left = previous[index - pixel_bytes] if index >= pixel_bytes else 0
                line[index] = (line[index] + _paeth(left, previous[index], up_left)) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown PNG filter type {kind} in row {row}")
        output[row * stride:(row + 1) * stride] = line
        previous = line
    return output


def read_png_rgba(path: str) -> tuple[np.ndarray, int]:
    """Return an RGB(A) PNG's samples as uint16 (height, width, channels), and its bit depth."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:8] != PNG_SIGNATURE:
        raise ValueError(f"{path} is not a PNG file")
    position = 8
    compressed = b""
    width = height = bit_depth = colour_type = interlace = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if colour_type not in CHANNELS or bit_depth not in (8, 16) or interlace:
        raise ValueError(f"{path}: colour type {colour_type}, {bit_depth}-bit, interlace {interlace} is not supported")
    channels = CHANNELS[colour_type]
    sample_bytes = bit_depth // 8
    raw = _unfilter(zlib.decompress(compressed), height, width * channels * sample_bytes, channels * sample_bytes)
    dtype = ">u2" if sample_bytes == 2 else "u1"
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(height, width, channels).astype(np.uint16), bit_depth


def to_eight_bit(samples: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round samples to 8 bits the way the engine does (nearest level)."""
    if bit_depth == 8:
        return samples.astype(np.uint8)
    return np.rint(samples.astype(np.float32) * (255 / 65535)).astype(np.uint8)
