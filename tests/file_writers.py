"""Writers of image files that Pillow cannot write, shared by the image decoding tests.

They write the bytes themselves: a 16-bit RGB or RGBA PNG, a PNG whose header claims a huge
size, and a 16-bit RGBA TIFF with unassociated alpha.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path: Path, samples: np.ndarray) -> None:
    """Write a 16-bit RGB (3 channels) or RGBA (4 channels) PNG, which Pillow cannot write."""
    height, width, channels = samples.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = samples.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
                     + png_chunk(b"IEND", b""))


def write_png_header_bomb(path: Path, width: int, height: int) -> None:
    """Write a tiny valid PNG whose IHDR claims width x height 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    image_data = png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + image_data + png_chunk(b"IEND", b""))


def write_tiff16_rgba(path: Path, samples: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write an uncompressed little-endian TIFF, 16 bits per sample, RGB plus unassociated alpha."""
    height, width, _ = samples.shape
    pixel_data = samples.astype("<u2").tobytes()
    short, long, undefined = 3, 4, 7
    entries: list[tuple[int, int, int, bytes]] = [
        (256, long, 1, struct.pack("<I", width)),
        (257, long, 1, struct.pack("<I", height)),
        (258, short, 4, struct.pack("<4H", 16, 16, 16, 16)),  # bits per sample
        (259, short, 1, struct.pack("<H", 1)),  # no compression
        (262, short, 1, struct.pack("<H", 2)),  # photometric RGB
        (273, long, 1, b""),  # strip offset, filled in below
        (277, short, 1, struct.pack("<H", 4)),  # samples per pixel
        (278, long, 1, struct.pack("<I", height)),  # rows per strip
        (279, long, 1, struct.pack("<I", len(pixel_data))),
        (284, short, 1, struct.pack("<H", 1)),  # interleaved samples
        (338, short, 1, struct.pack("<H", 2)),  # extra sample: unassociated alpha
    ]
    if icc_profile is not None:
        entries.append((34675, undefined, len(icc_profile), icc_profile))

    # Layout: header, image file directory, the values longer than 4 bytes, pixel data.
    directory_size = 2 + 12 * len(entries) + 4
    extra_offset = 8 + directory_size
    extra = b""
    values = []
    for _tag, _kind, _count, value in entries:
        if len(value) > 4:
            values.append(struct.pack("<I", extra_offset + len(extra)))
            extra += value + b"\x00" * (len(value) % 2)
        else:
            values.append(value)
    pixel_offset = extra_offset + len(extra)

    directory = struct.pack("<H", len(entries))
    for (tag, kind, count, _value), stored in zip(entries, values):
        if tag == 273:
            stored = struct.pack("<I", pixel_offset)
        directory += struct.pack("<HHI", tag, kind, count) + stored.ljust(4, b"\x00")
    directory += struct.pack("<I", 0)  # no next directory

    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + directory + extra + pixel_data)
