"""Read masks back from a Krita .kra file with the standard library, to check Krita's output from outside.

A .kra file is a zip archive. `maindoc.xml` describes the layer tree; each node's pixels are
stored in `<image name>/layers/<filename>` (a transparency mask's in `<filename>.pixelselection`,
with the value of pixels outside every stored tile in `<filename>.pixelselection.defaultpixel`)
in Krita's tiled format, version 2: a text header, then per tile a line `x,y,LZF,size` and
`size` bytes, whose first byte is 1 when the rest is LZF-compressed and 0 when it is raw. Tiles of
multi-byte pixels are stored planar: all first bytes, then all second bytes, and so on.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

KRITA_NAMESPACE = "{http://www.calligra.org/DTD/krita}"


@dataclass
class KraNode:
    name: str
    node_type: str
    filename: str
    x: int  # offset of the node's stored pixels in image coordinates
    y: int
    parent: str  # name of the layer a mask belongs to, empty for layers


def lzf_decompress(data: bytes, expected_length: int) -> bytes:
    """Decompress LZF data (liblzf's format, as Krita writes it)."""
    output = bytearray()
    position = 0
    while position < len(data):
        control = data[position]
        position += 1
        if control < 32:
            literal_length = control + 1
            output += data[position:position + literal_length]
            position += literal_length
            continue
        length = control >> 5
        if length == 7:
            length += data[position]
            position += 1
        distance = ((control & 0x1F) << 8) + data[position] + 1
        position += 1
        start = len(output) - distance
        if start < 0:
            raise ValueError(f"LZF back-reference {distance} bytes before the start of the output")
        for index in range(length + 2):
            output.append(output[start + index])
    if len(output) != expected_length:
        raise ValueError(f"LZF data decompressed to {len(output)} bytes, expected {expected_length}")
    return bytes(output)


def _parse_header(blob: bytes) -> tuple[dict[str, str], int]:
    header: dict[str, str] = {}
    position = 0
    for _ in range(5):
        end = blob.index(b"\n", position)
        key, value = blob[position:end].decode("ascii").split(" ", 1)
        header[key] = value
        position = end + 1
    if header.get("VERSION") != "2":
        raise ValueError(f"tiled data version {header.get('VERSION')!r} is not supported, expected 2")
    return header, position


def read_tiled(blob: bytes, default_pixel: bytes, x: int, y: int, width: int, height: int,
               origin_x: int = 0, origin_y: int = 0) -> bytes:
    """Return the pixels of the image rectangle (x, y, width, height) of one tiled device.

    `origin_x`, `origin_y` is the device's offset in image coordinates (the node's x and y).
    """
    header, position = _parse_header(blob)
    tile_width, tile_height = int(header["TILEWIDTH"]), int(header["TILEHEIGHT"])
    pixel_size, tile_count = int(header["PIXELSIZE"]), int(header["DATA"])
    if len(default_pixel) != pixel_size:
        raise ValueError(f"default pixel has {len(default_pixel)} bytes, expected {pixel_size}")
    pixels = bytearray(default_pixel * (width * height))
    tile_pixels = tile_width * tile_height
    for _ in range(tile_count):
        end = blob.index(b"\n", position)
        tile_x, tile_y, _, size = blob[position:end].decode("ascii").split(",")
        position = end + 1
        body = blob[position:position + int(size)]
        position += int(size)
        if body[0] == 1:
            raw = lzf_decompress(body[1:], tile_pixels * pixel_size)
        else:
            raw = bytes(body[1:])
        if pixel_size > 1:
            interleaved = bytearray(len(raw))
            for channel in range(pixel_size):
                interleaved[channel::pixel_size] = raw[channel * tile_pixels:(channel + 1) * tile_pixels]
            raw = bytes(interleaved)
        left = int(tile_x) + origin_x - x
        top = int(tile_y) + origin_y - y
        for row in range(tile_height):
            target_row = top + row
            if not 0 <= target_row < height:
                continue
            first = max(0, -left)
            last = min(tile_width, width - left)
            if first >= last:
                continue
            source = (row * tile_width + first) * pixel_size
            target = (target_row * width + left + first) * pixel_size
            pixels[target:target + (last - first) * pixel_size] = raw[source:source + (last - first) * pixel_size]
    return bytes(pixels)


class KraFile:
    """One .kra file opened for reading."""

    def __init__(self, path: str) -> None:
        self.archive = zipfile.ZipFile(path)
        root = ElementTree.fromstring(self.archive.read("maindoc.xml"))
        image = root.find(KRITA_NAMESPACE + "IMAGE")
        if image is None:
            raise ValueError(f"{path}: maindoc.xml has no IMAGE element")
        self.image_name = image.get("name", "")
        self.width = int(image.get("width", "0"))
        self.height = int(image.get("height", "0"))
        self.color_space = image.get("colorspacename", "")
        self.nodes: list[KraNode] = []
        self._collect(image, "")

    def _collect(self, element: ElementTree.Element, parent: str) -> None:
        for child in element:
            tag = child.tag.replace(KRITA_NAMESPACE, "")
            if tag in ("layer", "mask"):
                node = KraNode(child.get("name", ""), child.get("nodetype", ""), child.get("filename", ""),
                               int(child.get("x", "0")), int(child.get("y", "0")), parent if tag == "mask" else "")
                self.nodes.append(node)
                self._collect(child, node.name if tag == "layer" else parent)
            else:
                self._collect(child, parent)

    def masks(self, node_type: str = "transparencymask") -> list[KraNode]:
        return [node for node in self.nodes if node.node_type == node_type]

    def mask_pixels(self, mask: KraNode, x: int, y: int, width: int, height: int) -> bytes:
        """Return a transparency mask's bytes (0 hides, 255 shows) over an image rectangle."""
        base = f"{self.image_name}/layers/{mask.filename}.pixelselection"
        return read_tiled(self.archive.read(base), self.archive.read(base + ".defaultpixel"),
                          x, y, width, height, mask.x, mask.y)
