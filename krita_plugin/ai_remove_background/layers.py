"""Read layers for the worker and write its masks back, through Krita's scripting API.

Everything here touches Krita objects, so it must run on Krita's GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PyQt5.QtGui import QColor

from .options import BACKGROUND_BLUR, Options
from .pixels import DEPTHS, PixelLayout, bgra_to_rgba, native_to_little_endian, scale_alpha

# Profiles whose RGBA pixels are already in sRGB encoding, so they can be sent as they are.
SRGB_PROFILES = ("sRGB-elle-V2-srgbtrc.icc", "sRGB built-in")
WORK_PROFILE = "sRGB-elle-V2-srgbtrc.icc"
# Layers read through their own pixels, and layers read through their projection (what they show).
PIXEL_LAYER_TYPES = ("paintlayer",)
PROJECTION_LAYER_TYPES = ("grouplayer", "vectorlayer", "filelayer", "filllayer", "clonelayer")
MASK_TYPES = ("transparencymask", "selectionmask", "filtermask", "colorizemask", "transformmask")


class PluginError(Exception):
    """A problem the user can fix. The message states what is wrong and what to do."""


@dataclass
class LayerRequest:
    """One layer's pixels in sRGB encoding, ready for a worker request."""

    node_id: Any  # QUuid of the layer
    name: str
    x: int
    y: int
    width: int
    height: int
    sample: str  # "u8" or "u16"
    pixels: bytes  # RGBA, little-endian samples
    limit: bytes | None = None  # the selection, 0 to 255, one byte per pixel
    hint: bytes | None = None  # the user's transparency mask to refine, one byte per pixel
    hint_node_id: Any = None  # QUuid of that mask, which the result replaces
    converted_from: str = ""  # e.g. "CMYKA U16", empty when read as it is
    mask: bytes = field(default=b"", repr=False)
    reply: dict[str, Any] = field(default_factory=dict)


def layer_kind(node: Any) -> str:
    """Return a short description of a node's type for messages."""
    return {
        "paintlayer": "paint layer",
        "grouplayer": "group layer",
        "vectorlayer": "vector layer",
        "filelayer": "file layer",
        "filllayer": "fill layer",
        "clonelayer": "clone layer",
        "filterlayer": "filter layer",
    }.get(node.type(), node.type())


def target_layers(view: Any, document: Any) -> list[Any]:
    """Return the layers to work on: every selected layer, or the active one when it is not selected.

    A selected mask stands for the layer it belongs to. Raises PluginError naming a layer that
    has no pixels to read (filter layers) or when nothing is selected.
    """
    nodes = list(view.selectedNodes()) if view is not None else []
    active = document.activeNode()
    if active is not None and active.uniqueId() not in [node.uniqueId() for node in nodes]:
        # The Layers docker's selection lags behind an active node set by a script.
        nodes = [active]
    layers: list[Any] = []
    seen: set[str] = set()
    for node in nodes:
        if node.type() in MASK_TYPES:
            node = node.parentNode()
        if node is None:
            continue
        key = node.uniqueId().toString()
        if key in seen:
            continue
        seen.add(key)
        if node.type() not in PIXEL_LAYER_TYPES + PROJECTION_LAYER_TYPES:
            raise PluginError(
                f"Layer '{node.name()}' is a {layer_kind(node)}, which has no pixels of its own to "
                "remove a background from: select a paint layer (or a group) and run "
                "Filter > AI Remove Background again."
            )
        layers.append(node)
    if not layers:
        raise PluginError("No layer is selected: select a layer in the Layers docker and try again.")
    return layers


def _read_native(node: Any, x: int, y: int, width: int, height: int) -> bytes:
    if node.type() in PIXEL_LAYER_TYPES:
        return bytes(node.pixelData(x, y, width, height))
    return bytes(node.projectionPixelData(x, y, width, height))


def _is_srgb(node: Any) -> bool:
    return node.colorModel() == "RGBA" and node.colorDepth() in ("U8", "U16") and node.colorProfile() in SRGB_PROFILES


def _read_converted(document: Any, node: Any, depth: str, x: int, y: int, width: int, height: int) -> bytes:
    """Read a layer converted to sRGB RGBA `depth` from a throw-away copy of the document.

    The copy has its own undo history, so the user's document and its Undo stay untouched.
    """
    copy = document.clone()
    if copy is None:
        raise PluginError("Krita could not copy the document to convert its colours: save it and try again.")
    try:
        copy.setBatchmode(True)
        copy_node = copy.nodeByUniqueID(node.uniqueId())
        if copy_node is None:
            raise PluginError(f"Layer '{node.name()}' was not found in a copy of the document: try again.")
        if node.type() in PIXEL_LAYER_TYPES:
            converted = copy_node.setColorSpace("RGBA", depth, WORK_PROFILE)
        else:
            converted = copy.setColorSpace("RGBA", depth, WORK_PROFILE)
        copy.waitForDone()
        if not converted:
            raise PluginError(
                f"Krita could not convert layer '{node.name()}' from {node.colorModel()} {node.colorDepth()} "
                f"to sRGB: convert the image with Image > Convert Image Color Space and try again."
            )
        if node.type() not in PIXEL_LAYER_TYPES:
            copy.refreshProjection()
            copy.waitForDone()
        return _read_native(copy_node, x, y, width, height)
    finally:
        copy.close()


def hint_mask(node: Any) -> Any:
    """Return the layer's topmost transparency mask, or None when it has none."""
    masks = [child for child in node.childNodes() if child.type() == "transparencymask"]
    return masks[-1] if masks else None


def read_layer(document: Any, node: Any, limit_to_selection: bool, refine_from_mask: bool = False) -> LayerRequest:
    """Read a layer at its own bounds (which may lie partly outside the canvas) as sRGB RGBA.

    With `refine_from_mask`, the layer's topmost transparency mask becomes the request's hint.
    """
    bounds = node.bounds()
    if bounds.isEmpty():
        raise PluginError(
            f"Layer '{node.name()}' is empty: paint on it or select a layer with pixels, then try again."
        )
    x, y, width, height = bounds.x(), bounds.y(), bounds.width(), bounds.height()

    limit = None
    selection = document.selection() if limit_to_selection else None
    if selection is not None:
        limit = bytes(selection.pixelData(x, y, width, height))
        if not limit.strip(b"\x00"):
            raise PluginError(
                f"The selection does not overlap layer '{node.name()}': select part of the subject, "
                "or choose Select > Deselect to work on the whole layer."
            )

    converted_from = ""
    if _is_srgb(node):
        depth = node.colorDepth()
        data = _read_native(node, x, y, width, height)
    else:
        depth = "U8" if node.colorDepth() == "U8" else "U16"
        converted_from = f"{node.colorModel()} {node.colorDepth()} ({node.colorProfile()})"
        data = _read_converted(document, node, depth, x, y, width, height)

    sample, sample_bytes, _ = DEPTHS[depth]
    if len(data) != width * height * 4 * sample_bytes:
        raise PluginError(
            f"Krita returned {len(data)} bytes for layer '{node.name()}', expected "
            f"{width * height * 4 * sample_bytes}: please report this with your Krita version."
        )
    pixels = native_to_little_endian(bgra_to_rgba(data, sample_bytes), sample_bytes)
    request = LayerRequest(node.uniqueId(), node.name(), x, y, width, height, str(sample), pixels, limit=limit,
                           converted_from=converted_from)
    mask = hint_mask(node) if refine_from_mask else None
    if mask is not None:
        # Transparency masks hold one 8-bit sample per pixel whatever the layer's depth.
        request.hint = bytes(mask.pixelData(x, y, width, height))
        request.hint_node_id = mask.uniqueId()
        if len(request.hint) != width * height:
            raise PluginError(
                f"Krita returned {len(request.hint)} bytes for the mask '{mask.name()}' of layer "
                f"'{node.name()}', expected {width * height}: please report this with your Krita version."
            )
    return request


def pixel_layout(node: Any) -> PixelLayout:
    """Describe a layer's native pixels. Alpha is the last sample in every Krita colour model."""
    depth = node.colorDepth()
    if depth not in DEPTHS:
        raise PluginError(f"Layer '{node.name()}' has colour depth {depth}, which this plug-in cannot write.")
    sample_bytes = DEPTHS[depth][1]
    pixel_bytes = len(node.channels()) * sample_bytes
    return PixelLayout(pixel_bytes, pixel_bytes - sample_bytes, depth)


def mask_name(options: Options) -> str:
    return f"AI background mask ({options.model})"


def add_transparency_mask(document: Any, node: Any, request: LayerRequest, name: str) -> Any:
    """Add the mask as a new transparency mask node: one undo step that removes it again."""
    mask = document.createTransparencyMask(name)
    if mask is None:
        raise PluginError("Krita could not create a transparency mask: Krita 5.2 or newer is required.")
    node.addChildNode(mask, None)
    if mask.setPixelData(request.mask, request.x, request.y, request.width, request.height) is False:
        raise PluginError(f"Krita rejected the mask pixels for layer '{request.name}'.")
    return mask


def set_selection(document: Any, requests: list[LayerRequest]) -> None:
    """Replace the document's selection by the union of the masks.

    NOTE: Krita 5.2's Document.setSelection adds no undo step, so Edit > Undo does not bring
    the previous selection back (Select > Deselect and Reselect do work).
    """
    from krita import Selection

    combined = None
    for request in requests:
        part = Selection()
        part.setPixelData(request.mask, request.x, request.y, request.width, request.height)
        if combined is None:
            combined = part
        else:
            combined.add(part)
    document.setSelection(combined)


def add_cutout_layer(document: Any, node: Any, request: LayerRequest) -> Any:
    """Add, above the layer, a paint layer holding what the layer shows with the mask applied."""
    layout = pixel_layout(node)
    native = bytes(node.projectionPixelData(request.x, request.y, request.width, request.height))
    cutout = scale_alpha(native, request.width, request.height, layout, request.mask)
    layer = document.createNode(f"{node.name()} (background removed)", "paintlayer")
    layer.setColorSpace(node.colorModel(), node.colorDepth(), node.colorProfile())
    node.parentNode().addChildNode(layer, node)
    layer.setPixelData(cutout, request.x, request.y, request.width, request.height)
    return layer


def create_background_layer(document: Any, node: Any, request: LayerRequest, options: Options) -> Any:
    """Create, not yet inserted, a fill layer of the chosen colour or a paint layer to blur."""
    if options.background == BACKGROUND_BLUR:
        layer = document.createNode(f"{node.name()} background (blurred)", "paintlayer")
        layer.setColorSpace(node.colorModel(), node.colorDepth(), node.colorProfile())
        return layer
    from krita import InfoObject, Selection

    configuration = InfoObject()
    configuration.setProperty("color", QColor(options.background_color))
    canvas = Selection()
    canvas.select(0, 0, document.width(), document.height(), 255)
    layer = document.createFillLayer(f"{node.name()} background", "color", configuration, canvas)
    if layer is None:
        raise PluginError("Krita could not create a fill layer for the background colour.")
    return layer


def fill_blurred_background(node: Any, layer: Any, request: LayerRequest, options: Options) -> None:
    """Copy what the layer shows into `layer` (already in the document) and blur it."""
    from krita import Krita

    native = bytes(node.projectionPixelData(request.x, request.y, request.width, request.height))
    layer.setPixelData(native, request.x, request.y, request.width, request.height)
    blur = Krita.instance().filter("gaussian blur")
    configuration = blur.configuration()
    configuration.setProperty("horizRadius", options.blur_radius)
    configuration.setProperty("vertRadius", options.blur_radius)
    blur.setConfiguration(configuration)
    blur.apply(layer, request.x, request.y, request.width, request.height)


def insert_below(node: Any, layer: Any) -> bool:
    """Insert `layer` directly below `node`, and return True when it still needs a move down.

    Krita's scripting API can insert a node only above a sibling, so below the lowest child the
    layer goes above `node` and the caller moves it down with Krita's undoable Move Layer action.
    """
    parent = node.parentNode()
    siblings = parent.childNodes()  # bottom to top
    key = node.uniqueId().toString()
    index = next(i for i, sibling in enumerate(siblings) if sibling.uniqueId().toString() == key)
    if index > 0:
        parent.addChildNode(layer, siblings[index - 1])
        return False
    parent.addChildNode(layer, node)
    return True


def is_below(node: Any, layer: Any) -> bool:
    order = [sibling.uniqueId().toString() for sibling in node.parentNode().childNodes()]
    return order.index(layer.uniqueId().toString()) < order.index(node.uniqueId().toString())
