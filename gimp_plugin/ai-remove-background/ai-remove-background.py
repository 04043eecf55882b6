#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > AI Remove Background… (procedure plug-in-ai-remove-background).

Finds the subject of each selected layer and adds an editable layer mask that keeps it, or puts
the result into the selection, a new cut-out layer or a new background layer. The masks come from
the ai-remove-background engine, which runs in its own Python process: this file uses only GIMP's
API and the standard library, and reaches the engine through worker_client.py and engine.json,
which install.py copies beside it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp, GLib, GObject  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

PROCEDURE_NAME = "plug-in-ai-remove-background"
MENU_LABEL = "AI Remove Background…"
MENU_PATH = "<Image>/Filters"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
# install.py copies the model catalogue here, so the model list matches the installed engine.
CATALOGUE_FILE = os.path.join(PLUGIN_DIR, "catalogue.json")
# NOTE: used only when catalogue.json is missing (a plug-in copied by hand); keep it in step
# with models/catalogue.json.
FALLBACK_MODELS = [
    ("isnet", "ISNet: precise outlines, the default"),
    ("u2netp", "U2-Net small: fast, keeps secondary objects"),
    ("rvm", "Robust Video Matting: people only, real hair alpha"),
]
FALLBACK_DEFAULT_MODEL = "isnet"

OUTPUT_CHOICES = [
    ("mask", "Layer mask"),
    ("selection", "Selection"),
    ("new-layer", "New layer with transparency"),
    ("background-colour", "Subject over a new colour background layer"),
    ("background-blur", "Subject over a blurred copy of the layer"),
]
EXISTING_MASK_CHOICES = [
    ("replace", "Replace it"),
    ("refine", "Refine it: keep its black and white, solve the grey between"),
    ("intersect", "Intersect the result with it"),
    ("keep", "Keep it and add the result as a selection"),
]

# Masks and the selection contain coverage, not colour, so they are read and written as linear grey.
MASK_FORMAT = "Y u8"
# The worker takes u8, u16 or f32 samples in sRGB encoding ("R'G'B'A" in babl's names).
PIXEL_FORMATS = {
    "u8": "R'G'B'A u8",
    "u16": "R'G'B'A u16",
    "f32": "R'G'B'A float",
}
INTEGER_16_AND_32_BIT = (
    Gimp.Precision.U16_LINEAR,
    Gimp.Precision.U16_NON_LINEAR,
    Gimp.Precision.U16_PERCEPTUAL,
    # The worker takes no 32-bit integers, so these are sent as u16.
    Gimp.Precision.U32_LINEAR,
    Gimp.Precision.U32_NON_LINEAR,
    Gimp.Precision.U32_PERCEPTUAL,
)
INTEGER_8_BIT = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)

INTRO_TEXT = (
    "Finds the subject of each selected layer. The default result is a layer mask: "
    "paint on it in black or white to correct it, or use Layer > Mask > Apply Layer Mask."
)

log = logging.getLogger("ai-remove-background")


class PluginError(Exception):
    """A failure with a message for the user: what went wrong and what to do."""


@dataclass
class Settings:
    """The procedure's arguments, read once from its GimpProcedureConfig."""

    model: str
    refine_edges: bool
    grow: int
    feather: float
    invert: bool
    output: str
    existing_mask: str
    selection_only: bool
    background_colour: Gegl.Color
    blur_radius: float

    @classmethod
    def from_config(cls, config: Gimp.ProcedureConfig) -> "Settings":
        return cls(
            model=config.get_property("model"),
            refine_edges=config.get_property("refine-edges"),
            grow=config.get_property("grow"),
            feather=config.get_property("feather"),
            invert=config.get_property("invert"),
            output=config.get_property("output"),
            existing_mask=config.get_property("existing-mask"),
            selection_only=config.get_property("selection-only"),
            background_colour=config.get_property("background-colour"),
            blur_radius=config.get_property("blur-radius"),
        )

    def worker_options(self) -> dict:
        return {
            "model": self.model,
            "refine": self.refine_edges,
            "grow": self.grow,
            "feather": self.feather,
            "invert": self.invert,
        }


@dataclass
class LayerResult:
    """One layer and the mask computed for it, at the layer's own size."""

    layer: Gimp.Layer
    width: int
    height: int
    mask: bytes


def load_model_choices() -> tuple[list[tuple[str, str]], str]:
    """Return the models as (name, title) pairs and the default model's name."""
    try:
        with open(CATALOGUE_FILE, encoding="utf-8") as file:
            catalogue = json.load(file)
        models = [(name, entry.get("title", name)) for name, entry in catalogue["models"].items()]
        default = catalogue.get("default_model", models[0][0])
    except (OSError, ValueError, KeyError, IndexError, AttributeError) as error:
        log.info("using the built-in model list because %s is unusable (%s)", CATALOGUE_FILE, error)
        return FALLBACK_MODELS, FALLBACK_DEFAULT_MODEL
    return models, default


def make_choice(entries: list[tuple[str, str]]) -> Gimp.Choice:
    choice = Gimp.Choice.new()
    for index, (nick, label) in enumerate(entries):
        choice.add(nick, index, label, "")
    return choice


# ---------------------------------------------------------------------------------------------
# Checking the request before anything runs
# ---------------------------------------------------------------------------------------------


def check_drawables(drawables: list[Gimp.Drawable]) -> list[Gimp.Layer]:
    """Return the selected layers, or raise PluginError naming a drawable that is not a layer."""
    if not drawables:
        raise PluginError("no layer is selected: select one or more layers in the Layers dockable")
    layers = []
    for drawable in drawables:
        name = drawable.get_name()
        if isinstance(drawable, Gimp.LayerMask):
            owner = Gimp.Layer.from_mask(drawable)
            owner_name = owner.get_name() if owner is not None else "its layer"
            raise PluginError(
                f"'{name}' is a layer mask: select the layer '{owner_name}' itself "
                "(click its thumbnail in the Layers dockable), then run the filter again"
            )
        if isinstance(drawable, Gimp.Channel):
            raise PluginError(
                f"'{name}' is a channel, and AI Remove Background works on layers: "
                "select a layer in the Layers dockable"
            )
        if not isinstance(drawable, Gimp.Layer):
            raise PluginError(f"'{name}' is not a layer: select a layer in the Layers dockable")
        if drawable.is_floating_sel():
            raise PluginError(
                f"'{name}' is a floating selection: anchor it or turn it into a new layer first"
            )
        layers.append(drawable)
    return layers


def check_settings(image: Gimp.Image, layers: list[Gimp.Layer], settings: Settings) -> None:
    outputs = [nick for nick, _ in OUTPUT_CHOICES]
    if settings.output not in outputs:
        raise PluginError(f"unknown output {settings.output!r}: expected one of {', '.join(outputs)}")
    if settings.output == "background-blur" and image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        raise PluginError(
            "a blurred background needs an RGB or grayscale image, and this image is indexed: "
            "use Image > Mode > RGB first, or choose a colour background"
        )


# ---------------------------------------------------------------------------------------------
# Reading pixels
# ---------------------------------------------------------------------------------------------


def sample_type(image: Gimp.Image) -> str:
    """Return the worker's sample type that keeps the image's precision: u8, u16 or f32."""
    precision = image.get_precision()
    if precision in INTEGER_8_BIT:
        return "u8"
    if precision in INTEGER_16_AND_32_BIT:
        return "u16"
    return "f32"  # half, float and double


def read_layer_pixels(layer: Gimp.Layer, sample: str) -> bytes:
    """Read the whole layer, at its own size, as straight RGBA in sRGB encoding.

    babl converts from any mode (RGB, grayscale, indexed), precision and colour profile, and
    layers without an alpha channel read as opaque.
    """
    rectangle = Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height())
    return layer.get_buffer().get(rectangle, 1.0, PIXEL_FORMATS[sample], Gegl.AbyssPolicy.NONE)


def read_selection_limit(image: Gimp.Image, layer: Gimp.Layer) -> bytes | None:
    """Return the selection cut to the layer's bounds, or None when nothing is selected.

    Raises PluginError when a selection exists but misses the layer entirely.
    """
    if Gimp.Selection.is_empty(image):
        return None
    offset_x, offset_y = layer.get_offsets()[1:]
    width, height = layer.get_width(), layer.get_height()
    rectangle = Gegl.Rectangle.new(offset_x, offset_y, width, height)
    # The selection covers the canvas only; outside it the abyss reads as 0 (not selected).
    plane = image.get_selection().get_buffer().get(rectangle, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE)
    if not any(plane):
        raise PluginError(
            "the selection does not overlap this layer: select part of the layer, choose "
            "Select > None, or turn off 'Search only inside the selection'"
        )
    return plane


def read_mask(mask: Gimp.LayerMask) -> bytes:
    rectangle = Gegl.Rectangle.new(0, 0, mask.get_width(), mask.get_height())
    return mask.get_buffer().get(rectangle, 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE)


def multiply_planes(first: bytes, second: bytes) -> bytes:
    """Multiply two 8-bit planes, 255 being 1.0, rounding to nearest."""
    # NOTE: pure Python, because GIMP's Python may lack numpy: 0.6 s per 10 megapixels measured
    # with CPython 3.11 on one core of a 2-core x86-64 server.
    return bytes((a * b + 127) // 255 for a, b in zip(first, second))


# ---------------------------------------------------------------------------------------------
# Computing every mask before the image changes
# ---------------------------------------------------------------------------------------------


def open_worker():
    """Return a WorkerClient for the engine recorded in engine.json beside this file."""
    try:
        import worker_client
    except ImportError:
        raise PluginError(
            f"worker_client.py is missing from {PLUGIN_DIR}: run 'python3 install.py' from the "
            "ai-remove-background folder to install the plug-in"
        ) from None
    try:
        return worker_client, worker_client.WorkerClient.from_plugin_dir(PLUGIN_DIR)
    except worker_client.WorkerError as error:
        raise PluginError(str(error)) from None


def compute_masks(
    image: Gimp.Image, layers: list[Gimp.Layer], settings: Settings
) -> tuple[list[LayerResult], str | None]:
    """Run the engine on each layer in turn, stopping at the first layer that fails.

    Returns the finished layers' results and the failure's message (None when every layer
    finished). It only reads the image, so a failure here leaves the image unchanged.
    Raises PluginError when the engine cannot be started at all.
    """
    sample = sample_type(image)
    worker_client, client = open_worker()
    results = []
    try:
        for index, layer in enumerate(layers):
            try:
                results.append(compute_mask(image, layer, index, len(layers), settings, sample, client))
            except (PluginError, worker_client.WorkerError) as error:
                return results, f"layer '{layer.get_name()}': {error}"
            except GLib.Error as error:
                return results, f"layer '{layer.get_name()}': reading it failed ({error.message})"
    finally:
        client.close()
    return results, None


def compute_mask(
    image: Gimp.Image,
    layer: Gimp.Layer,
    index: int,
    count: int,
    settings: Settings,
    sample: str,
    client,
) -> LayerResult:
    """Return one layer's mask, read from the engine. Raises PluginError or WorkerError when it fails."""
    name = layer.get_name()
    width, height = layer.get_width(), layer.get_height()
    Gimp.progress_set_text(f"AI Remove Background: reading '{name}'")
    Gimp.progress_update(index / count)
    pixels = read_layer_pixels(layer, sample)
    limit = read_selection_limit(image, layer) if settings.selection_only else None
    existing = layer.get_mask()
    # The engine keeps the hint's 0 and 255 pixels and solves the others by matting.
    hint = read_mask(existing) if existing is not None and settings.existing_mask == "refine" else None

    # libgimp 3.0 gives plug-ins no way to ask whether Cancel was pressed: GIMP kills the
    # plug-in instead (see run), so this callback never stops the worker.
    def report_progress(fraction: float, stage: str) -> None:
        Gimp.progress_set_text(f"AI Remove Background: {stage} ('{name}')")
        Gimp.progress_update((index + 0.9 * max(0.0, min(1.0, fraction))) / count)

    reply, mask = client.remove_background(
        width,
        height,
        4,
        sample,
        pixels,
        options=settings.worker_options(),
        limit=limit,
        hint=hint,
        on_progress=report_progress,
    )
    if len(mask) != width * height:
        raise PluginError(
            f"the engine returned {len(mask)} mask bytes for a {width}x{height} layer: "
            "reinstall with 'python3 install.py'"
        )
    log.info(
        "layer '%s' (%dx%d, %s): model %s on %s in %.1f s",
        name,
        width,
        height,
        sample,
        reply.get("model"),
        reply.get("provider"),
        float(reply.get("seconds", 0.0)),
    )

    if existing is not None and settings.existing_mask == "intersect":
        mask = multiply_planes(mask, read_mask(existing))
    return LayerResult(layer, width, height, mask)


def partial_summary(layers: list[Gimp.Layer], results: list[LayerResult], failure: str) -> str:
    """Describe a run that stopped at a failing layer after finishing others."""
    finished = ", ".join(f"'{result.layer.get_name()}'" for result in results)
    untouched = ", ".join(f"'{layer.get_name()}'" for layer in layers[len(results) :])
    return (
        f"{failure}. Finished {len(results)} of {len(layers)} layers ({finished}); Edit > Undo removes "
        f"their result. Left unchanged: {untouched}."
    )


# ---------------------------------------------------------------------------------------------
# Applying the results, inside one undo group
# ---------------------------------------------------------------------------------------------


def write_plane(
    drawable: Gimp.Drawable,
    x: int,
    y: int,
    width: int,
    height: int,
    data: bytes,
    format_name: str = MASK_FORMAT,
) -> None:
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(x, y, width, height), format_name, data)
    buffer.flush()
    drawable.update(x, y, width, height)


def set_layer_mask(layer: Gimp.Layer, mask: bytes) -> None:
    """Give the layer a new mask containing `mask`, after removing any old mask (undoably)."""
    if layer.get_mask() is not None:
        layer.remove_mask(Gimp.MaskApplyMode.DISCARD)
    if not layer.has_alpha():
        layer.add_alpha()
    layer_mask = layer.create_mask(Gimp.AddMaskType.WHITE)
    layer.add_mask(layer_mask)
    # The mask was created inside this undo group, so undoing the group removes the pixels too.
    write_plane(layer_mask, 0, 0, layer.get_width(), layer.get_height(), mask)


def crop_to_canvas(
    image: Gimp.Image, layer: Gimp.Layer, mask: bytes
) -> tuple[int, int, int, int, bytes] | None:
    """Return (x, y, width, height, pixels) of the part of a layer mask that lies on the canvas."""
    offset_x, offset_y = layer.get_offsets()[1:]
    width, height = layer.get_width(), layer.get_height()
    left, top = max(offset_x, 0), max(offset_y, 0)
    right = min(offset_x + width, image.get_width())
    bottom = min(offset_y + height, image.get_height())
    if right <= left or bottom <= top:
        return None
    rows = []
    for y in range(top, bottom):
        start = (y - offset_y) * width + (left - offset_x)
        rows.append(mask[start : start + right - left])
    return left, top, right - left, bottom - top, b"".join(rows)


def add_to_selection(image: Gimp.Image, result: LayerResult, operation: Gimp.ChannelOps) -> None:
    """Combine a layer's mask into the selection, through a temporary channel (undoable)."""
    channel = Gimp.Channel.new(
        image, "AI Remove Background", image.get_width(), image.get_height(), 100.0, Gegl.Color.new("black")
    )
    image.insert_channel(channel, None, 0)
    cropped = crop_to_canvas(image, result.layer, result.mask)
    if cropped is not None:
        x, y, width, height, pixels = cropped
        # Selecting a channel copies its stored values unconverted, so write them in the
        # channel's own colour model ("Y'" in 8-bit non-linear images, "Y" in linear ones).
        model = Babl.get_name(channel.get_format()).split(" ")[0]
        write_plane(channel, x, y, width, height, pixels, f"{model} u8")
    image.select_item(operation, channel)
    image.remove_channel(channel)


def copy_for_new_layer(image: Gimp.Image, layer: Gimp.Layer, name: str, position_offset: int) -> Gimp.Layer:
    """Insert a copy of the layer beside it, without its mask. A layer group's copy is merged."""
    copy = layer.copy()
    image.insert_layer(copy, layer.get_parent(), image.get_item_position(layer) + position_offset)
    if copy.get_mask() is not None:
        copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
    if isinstance(copy, Gimp.GroupLayer):
        copy = copy.merge()
    copy.set_name(name)
    return copy


def add_cutout_layer(image: Gimp.Image, result: LayerResult) -> Gimp.Layer:
    """Insert a copy of the layer above it with the mask applied to its alpha, and hide the original."""
    layer = result.layer
    cutout = copy_for_new_layer(image, layer, f"{layer.get_name()} (cut out)", 0)
    if not cutout.has_alpha():
        cutout.add_alpha()
    layer_mask = cutout.create_mask(Gimp.AddMaskType.WHITE)
    cutout.add_mask(layer_mask)
    write_plane(layer_mask, 0, 0, result.width, result.height, result.mask)
    cutout.remove_mask(Gimp.MaskApplyMode.APPLY)
    layer.set_visible(False)
    return cutout


def base_layer_type(image: Gimp.Image) -> Gimp.ImageType:
    return {
        Gimp.ImageBaseType.RGB: Gimp.ImageType.RGB_IMAGE,
        Gimp.ImageBaseType.GRAY: Gimp.ImageType.GRAY_IMAGE,
        Gimp.ImageBaseType.INDEXED: Gimp.ImageType.INDEXED_IMAGE,
    }[image.get_base_type()]


def add_colour_background(image: Gimp.Image, layer: Gimp.Layer, colour: Gegl.Color) -> Gimp.Layer:
    """Insert an opaque layer of `colour` below the layer, with the same bounds."""
    background = Gimp.Layer.new(
        image,
        f"{layer.get_name()} background",
        layer.get_width(),
        layer.get_height(),
        base_layer_type(image),
        100.0,
        Gimp.LayerMode.NORMAL,
    )
    image.insert_layer(background, layer.get_parent(), image.get_item_position(layer) + 1)
    background.set_offsets(*layer.get_offsets()[1:])
    Gimp.context_push()
    try:
        Gimp.context_set_foreground(colour)
        background.fill(Gimp.FillType.FOREGROUND)
    finally:
        Gimp.context_pop()
    return background


def add_blurred_background(image: Gimp.Image, layer: Gimp.Layer, radius: float) -> Gimp.Layer:
    """Insert a Gaussian-blurred copy of the layer below it."""
    background = copy_for_new_layer(image, layer, f"{layer.get_name()} background", 1)
    # Filters only change the selected area, so the selection is set aside while blurring.
    saved_selection = None
    if not Gimp.Selection.is_empty(image):
        saved_selection = Gimp.Selection.save(image)
        Gimp.Selection.none(image)
    blur = Gimp.DrawableFilter.new(background, "gegl:gaussian-blur", "")
    blur_config = blur.get_config()
    blur_config.set_property("std-dev-x", radius)
    blur_config.set_property("std-dev-y", radius)
    background.merge_filter(blur)
    if saved_selection is not None:
        image.select_item(Gimp.ChannelOps.REPLACE, saved_selection)
        image.remove_channel(saved_selection)
    return background


def apply_results(image: Gimp.Image, results: list[LayerResult], settings: Settings) -> None:
    selected_layers = image.get_selected_layers()
    new_layers = []
    selection_started = False

    def select(result: LayerResult) -> None:
        nonlocal selection_started
        operation = Gimp.ChannelOps.ADD if selection_started else Gimp.ChannelOps.REPLACE
        add_to_selection(image, result, operation)
        selection_started = True

    for result in results:
        layer = result.layer
        # check_settings accepted only the outputs handled here.
        if settings.output == "selection":
            select(result)
        elif settings.output == "new-layer":
            new_layers.append(add_cutout_layer(image, result))
        else:  # mask, background-colour and background-blur put the result into the layer's mask
            if settings.output == "background-colour":
                add_colour_background(image, layer, settings.background_colour)
            elif settings.output == "background-blur":
                add_blurred_background(image, layer, settings.blur_radius)
            if layer.get_mask() is not None and settings.existing_mask == "keep":
                select(result)
            else:
                set_layer_mask(layer, result.mask)

    # Inserting layers and channels changes which layers are selected in the Layers dockable.
    image.set_selected_layers(new_layers or selected_layers)


# ---------------------------------------------------------------------------------------------
# Procedure callback
# ---------------------------------------------------------------------------------------------


def show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig) -> bool:
    """Show the options dialog that GIMP builds from the declared arguments. Return False on Cancel."""
    dialog = build_dialog(procedure, config)
    try:
        return dialog.run()
    finally:
        dialog.destroy()


def build_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig):
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("ai-remove-background")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "AI Remove Background")
    intro = dialog.get_label("intro-label", INTRO_TEXT, False, False)
    intro.set_line_wrap(True)
    intro.set_max_width_chars(60)
    dialog.fill(
        [
            "intro-label",
            "model",
            "refine-edges",
            "grow",
            "feather",
            "invert",
            "output",
            "existing-mask",
            "selection-only",
            "background-colour",
            "blur-radius",
        ]
    )
    return dialog


def error_values(procedure: Gimp.Procedure, message: str) -> Gimp.ValueArray:
    """Return EXECUTION_ERROR with the message, which GIMP shows to the user after a menu run."""
    log.error("%s", message)
    error = GLib.Error.new_literal(Gimp.PlugIn.error_quark(), f"AI Remove Background: {message}", 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def run(procedure, run_mode, image, drawables, config, data):
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())

    # GIMP's Cancel button kills the plug-in, and its whole process group when that differs from
    # GIMP's own (app/plug-in/gimpplugin.c), so a group of our own takes the worker down too.
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError as error:
            log.info("cannot start a process group (%s); a cancelled worker ends on its own", error)

    Gimp.progress_init("AI Remove Background")
    try:
        return remove_backgrounds(procedure, image, list(drawables or []), config)
    except Exception as error:  # a bug: report it rather than end with GIMP's "plug-in crashed"
        traceback.print_exc()
        return error_values(procedure, f"internal error ({type(error).__name__}: {error}); please report it")
    finally:
        Gimp.progress_end()


def remove_backgrounds(procedure, image, drawables, config):
    """Compute the selected layers' masks, then apply them in one undo group.

    Every mask is computed before the image changes. When a layer fails, the layers before it
    still get their result, the others stay as they were, and the error names both groups.
    """
    try:
        settings = Settings.from_config(config)
        layers = check_drawables(drawables)
        check_settings(image, layers, settings)
        results, failure = compute_masks(image, layers, settings)
    except PluginError as error:
        return error_values(procedure, str(error))
    except GLib.Error as error:
        return error_values(procedure, f"reading the layers failed ({error.message})")
    if not results:
        return error_values(procedure, failure or "no layer was processed")

    Gimp.progress_set_text("AI Remove Background: applying")
    image.undo_group_start()
    try:
        apply_results(image, results, settings)
    except (PluginError, GLib.Error) as error:
        # NOTE: plug-ins cannot undo, so the steps applied before the failure stay in the undo
        # group, and the message points the user to Edit > Undo.
        detail = error.message if isinstance(error, GLib.Error) else str(error)
        return error_values(
            procedure, f"applying the result failed ({detail}): Edit > Undo restores the image"
        )
    finally:
        image.undo_group_end()

    for result in results:
        if not any(result.mask):
            Gimp.message(
                f"AI Remove Background found no subject in layer '{result.layer.get_name()}': "
                "the mask is empty. Try another model, or select the subject's area first."
            )
    Gimp.displays_flush()
    if failure is not None:
        return error_values(procedure, partial_summary(layers, results, failure))
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


class AiRemoveBackground(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        Gegl.init(None)
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("*")
        procedure.set_sensitivity_mask(
            Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        )
        procedure.set_menu_label(MENU_LABEL)
        procedure.add_menu_path(MENU_PATH)
        procedure.set_documentation(
            "Remove the background with an AI model, as an editable layer mask",
            "Finds the subject of each selected layer with a local AI model and adds a layer mask "
            "that keeps it. It can instead make a selection, a new layer with transparency, or "
            "put the subject over a new colour or blurred background layer.",
            name,
        )
        procedure.set_attribution("ai-remove-background contributors", "GPL-3.0-or-later", "2025")

        flags = GObject.ParamFlags.READWRITE
        # Each label's mnemonic (the letter after "_") is unique in the dialog, whose buttons
        # already use L, S, H, R, C and O (_Load Saved Settings, _Save Settings, _Help, _Reset,
        # _Cancel, _OK).
        models, default_model = load_model_choices()
        procedure.add_choice_argument(
            "model", "_Model", "AI model that finds the subject", make_choice(models), default_model, flags
        )
        procedure.add_boolean_argument(
            "refine-edges", "Refine _edges", "Edge-aware refinement of hair and fine outlines", True, flags
        )
        procedure.add_int_argument(
            "grow", "_Grow (px)", "Pixels to grow the mask by; negative values shrink it", -500, 500, 0, flags
        )
        procedure.add_double_argument(
            "feather",
            "_Feather (px)",
            "Gaussian feather radius of the mask edge in pixels",
            0.0,
            500.0,
            0.0,
            flags,
        )
        procedure.add_boolean_argument(
            "invert", "_Invert", "Keep the background and remove the subject instead", False, flags
        )
        procedure.add_choice_argument(
            "output", "Ou_tput", "What the result becomes", make_choice(OUTPUT_CHOICES), "mask", flags
        )
        procedure.add_choice_argument(
            "existing-mask",
            "_When the layer has a mask",
            "What happens to a layer mask that is already there",
            make_choice(EXISTING_MASK_CHOICES),
            "replace",
            flags,
        )
        procedure.add_boolean_argument(
            "selection-only",
            "Search only i_nside the selection",
            "When there is a selection, look for the subject inside it only; the mask is empty outside",
            True,
            flags,
        )
        procedure.add_color_argument(
            "background-colour",
            "Bac_kground colour",
            "Colour of the new background layer (output 'Subject over a new colour background layer')",
            False,
            Gegl.Color.new("white"),
            flags,
        )
        procedure.add_double_argument(
            "blur-radius",
            "_Blur radius (px)",
            "Standard deviation of the background blur in pixels (output 'Subject over a blurred copy')",
            0.5,
            500.0,
            20.0,
            flags,
        )
        return procedure


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    Gimp.main(AiRemoveBackground.__gtype__, sys.argv)
