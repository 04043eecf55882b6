"""Read layers, layer masks and channels back from a GIMP .xcf file, outside GIMP.

It reads enough of the format for the tests: the header, layer and channel records with their
properties, and the first level of each drawable's pixel hierarchy. Tiles may be uncompressed,
RLE or zlib compressed, with 8, 16, 32 or 64-bit components. The format is described in
devel-docs/xcf.txt of GIMP's source tree; components wider than 8 bits are big-endian.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TILE_SIZE = 64

# Property types (devel-docs/xcf.txt).
PROP_END = 0
PROP_OPACITY = 6
PROP_VISIBLE = 8
PROP_OFFSETS = 15
PROP_COMPRESSION = 17
PROP_SELECTION = 4
PROP_TEXT_LAYER_FLAGS = 26
PROP_GROUP_ITEM = 29

COMPRESSION_NONE = 0
COMPRESSION_RLE = 1
COMPRESSION_ZLIB = 2

# Precision values of XCF version 7 and later: (numpy type, maximum value for integers).
PRECISIONS = {
    100: (">u1", 255),
    150: (">u1", 255),
    175: (">u1", 255),
    200: (">u2", 65535),
    250: (">u2", 65535),
    275: (">u2", 65535),
    300: (">u4", 4294967295),
    350: (">u4", 4294967295),
    375: (">u4", 4294967295),
    500: (">f2", None),
    550: (">f2", None),
    575: (">f2", None),
    600: (">f4", None),
    650: (">f4", None),
    675: (">f4", None),
    700: (">f8", None),
    750: (">f8", None),
    775: (">f8", None),
}


class XcfError(ValueError):
    """The file is not an XCF file this reader understands."""


@dataclass
class Drawable:
    """A layer, layer mask or channel: its name, size, properties and where its pixels start."""

    name: str
    width: int
    height: int
    properties: dict[int, bytes]
    hierarchy_offset: int
    kind: int = 0  # layers only: GimpImageType, 0 RGB, 1 RGBA, 2 GRAY, 3 GRAYA, 4 INDEXED, 5 INDEXEDA

    @property
    def offsets(self) -> tuple[int, int]:
        data = self.properties.get(PROP_OFFSETS)
        return struct.unpack(">ii", data) if data else (0, 0)

    @property
    def visible(self) -> bool:
        data = self.properties.get(PROP_VISIBLE)
        return bool(struct.unpack(">I", data)[0]) if data else False

    @property
    def is_group(self) -> bool:
        return PROP_GROUP_ITEM in self.properties

    @property
    def is_text(self) -> bool:
        return PROP_TEXT_LAYER_FLAGS in self.properties

    @property
    def is_selection(self) -> bool:
        return PROP_SELECTION in self.properties


@dataclass
class Layer(Drawable):
    mask: Drawable | None = None


@dataclass
class XcfImage:
    """The parts of an XCF file that the tests check."""

    path: Path
    version: int
    width: int
    height: int
    base_type: int  # 0 RGB, 1 grayscale, 2 indexed
    precision: int
    compression: int
    layers: list[Layer] = field(default_factory=list)
    channels: list[Drawable] = field(default_factory=list)
    data: bytes = b""

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in {self.path}; layers: {[layer.name for layer in self.layers]}")

    def selection(self) -> Drawable | None:
        for channel in self.channels:
            if channel.is_selection:
                return channel
        return None

    def pixels(self, drawable: Drawable) -> np.ndarray:
        """Return the drawable's pixels as an array of shape (height, width, components), in storage order."""
        return read_hierarchy(
            self.data, drawable.hierarchy_offset, self.version, self.compression, self.precision
        )

    def mask_u8(self, drawable: Drawable) -> np.ndarray:
        """Return a one-component drawable (a mask or channel) as 8-bit values, shape (height, width)."""
        values = self.pixels(drawable)
        if values.shape[2] != 1:
            raise XcfError(f"{drawable.name!r} has {values.shape[2]} components, expected 1")
        return to_u8(values[:, :, 0], self.precision)


def to_u8(values: np.ndarray, precision: int) -> np.ndarray:
    """Convert stored component values to 0-255, rounding to nearest."""
    _, maximum = PRECISIONS[precision]
    if maximum is None:
        scaled = np.clip(values.astype(np.float64), 0.0, 1.0) * 255.0
    else:
        scaled = values.astype(np.float64) * (255.0 / maximum)
    return np.floor(scaled + 0.5).astype(np.uint8)


class _Cursor:
    """Big-endian reads from the file's bytes; pointers are 64-bit from XCF version 11 on."""

    def __init__(self, data: bytes, version: int, position: int = 0) -> None:
        self.data = data
        self.position = position
        self.version = version
        self.pointer_format = ">Q" if version >= 11 else ">I"

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.position + size > len(self.data):
            raise XcfError(f"file ends at byte {len(self.data)} inside a record at byte {self.position}")
        values = struct.unpack_from(fmt, self.data, self.position)
        self.position += size
        return values

    def u32(self) -> int:
        return self.unpack(">I")[0]

    def pointer(self) -> int:
        return self.unpack(self.pointer_format)[0]

    def pointers(self) -> list[int]:
        """Read a list of pointers that ends with a zero pointer."""
        result = []
        while True:
            value = self.pointer()
            if value == 0:
                return result
            result.append(value)

    def string(self) -> str:
        length = self.u32()
        raw = self.data[self.position : self.position + length]
        self.position += length
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def properties(self) -> dict[int, bytes]:
        result = {}
        while True:
            kind, length = self.unpack(">II")
            result[kind] = self.data[self.position : self.position + length]
            self.position += length
            if kind == PROP_END:
                return result


def read_xcf(path: str | Path) -> XcfImage:
    data = Path(path).read_bytes()
    if not data.startswith(b"gimp xcf "):
        raise XcfError(f"{path} is not an XCF file (no 'gimp xcf ' signature)")
    tag = data[9:13]
    if tag == b"file":
        version = 0
    elif tag[:1] == b"v" and tag[1:].isdigit():
        version = int(tag[1:])
    else:
        raise XcfError(f"{path}: unknown XCF version tag {tag!r}")
    cursor = _Cursor(data, version, 14)
    width, height, base_type = cursor.unpack(">III")
    precision = 150
    if version >= 4:
        if version < 7:
            raise XcfError(f"{path}: XCF version {version} numbers its precisions differently; not supported")
        precision = cursor.u32()
    if precision not in PRECISIONS:
        raise XcfError(f"{path}: unknown precision {precision}")
    image_properties = cursor.properties()
    compression = image_properties.get(PROP_COMPRESSION, bytes([COMPRESSION_RLE]))[0]
    layer_offsets = cursor.pointers()
    channel_offsets = cursor.pointers()

    image = XcfImage(Path(path), version, width, height, base_type, precision, compression, data=data)
    for offset in layer_offsets:
        image.layers.append(_read_layer(_Cursor(data, version, offset)))
    for offset in channel_offsets:
        image.channels.append(_read_channel(_Cursor(data, version, offset)))
    return image


def _read_layer(cursor: _Cursor) -> Layer:
    width, height, kind = cursor.unpack(">III")
    name = cursor.string()
    properties = cursor.properties()
    hierarchy_offset = cursor.pointer()
    mask_offset = cursor.pointer()
    mask = None
    if mask_offset:
        mask = _read_channel(_Cursor(cursor.data, cursor.version, mask_offset))
    return Layer(name, width, height, properties, hierarchy_offset, kind, mask)


def _read_channel(cursor: _Cursor) -> Drawable:
    width, height = cursor.unpack(">II")
    name = cursor.string()
    properties = cursor.properties()
    hierarchy_offset = cursor.pointer()
    return Drawable(name, width, height, properties, hierarchy_offset)


def read_hierarchy(data: bytes, offset: int, version: int, compression: int, precision: int) -> np.ndarray:
    cursor = _Cursor(data, version, offset)
    width, height, bytes_per_pixel = cursor.unpack(">III")
    level_offset = cursor.pointer()  # the first level is the full-size one
    cursor.position = level_offset
    level_width, level_height = cursor.unpack(">II")
    if (level_width, level_height) != (width, height):
        raise XcfError(
            f"level size {level_width}x{level_height} differs from hierarchy size {width}x{height}"
        )
    tile_offsets = cursor.pointers()

    component_type, _ = PRECISIONS[precision]
    component_size = np.dtype(component_type).itemsize
    if bytes_per_pixel % component_size:
        raise XcfError(f"{bytes_per_pixel} bytes per pixel do not fit components of {component_size} bytes")
    components = bytes_per_pixel // component_size
    columns = (width + TILE_SIZE - 1) // TILE_SIZE
    rows = (height + TILE_SIZE - 1) // TILE_SIZE
    if len(tile_offsets) != columns * rows:
        raise XcfError(f"{len(tile_offsets)} tiles for a {width}x{height} level, expected {columns * rows}")

    result = np.zeros((height, width, components), dtype=component_type)
    for index, tile_offset in enumerate(tile_offsets):
        top = (index // columns) * TILE_SIZE
        left = (index % columns) * TILE_SIZE
        tile_height = min(TILE_SIZE, height - top)
        tile_width = min(TILE_SIZE, width - left)
        size = tile_width * tile_height * bytes_per_pixel
        if compression == COMPRESSION_NONE:
            raw = data[tile_offset : tile_offset + size]
        elif compression == COMPRESSION_RLE:
            raw = decode_rle_tile(data, tile_offset, tile_width * tile_height, bytes_per_pixel)
        elif compression == COMPRESSION_ZLIB:
            # NOTE: GIMP's batch saves use RLE, so the tests do not read zlib tiles.
            raw = zlib.decompressobj().decompress(data[tile_offset:], size)
        else:
            raise XcfError(f"unknown tile compression {compression}")
        if len(raw) != size:
            raise XcfError(f"tile {index} has {len(raw)} bytes, expected {size}")
        tile = np.frombuffer(raw, dtype=component_type).reshape(tile_height, tile_width, components)
        result[top : top + tile_height, left : left + tile_width] = tile
    return result


def decode_rle_tile(data: bytes, offset: int, pixel_count: int, bytes_per_pixel: int) -> bytes:
    """Decode one RLE tile: each byte of the pixel is stored as its own run-length stream.

    Opcode n < 127: n + 1 copies of the next byte. n == 127: a 16-bit count, then the byte.
    n == 128: a 16-bit count, then that many literal bytes. n > 128: 256 - n literal bytes.
    """
    output = bytearray(pixel_count * bytes_per_pixel)
    position = offset
    for byte_index in range(bytes_per_pixel):
        pixel = 0
        while pixel < pixel_count:
            opcode = data[position]
            position += 1
            if opcode < 127:
                count, value = opcode + 1, data[position]
                position += 1
                literal = None
            elif opcode == 127:
                count, value = (data[position] << 8) | data[position + 1], data[position + 2]
                position += 3
                literal = None
            elif opcode == 128:
                count = (data[position] << 8) | data[position + 1]
                position += 2
                literal = data[position : position + count]
                position += count
            else:
                count = 256 - opcode
                literal = data[position : position + count]
                position += count
            if pixel + count > pixel_count:
                raise XcfError(f"RLE run of {count} passes the tile's end at pixel {pixel} of {pixel_count}")
            start = pixel * bytes_per_pixel + byte_index
            stop = (pixel + count) * bytes_per_pixel
            output[start:stop:bytes_per_pixel] = literal if literal is not None else bytes([value]) * count
            pixel += count
    return bytes(output)
