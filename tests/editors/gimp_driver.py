"""Run test cases of plug-in-ai-remove-background inside real GIMP 3, for tests/test_gimp.py.

GIMP's python-fu-eval batch interpreter executes this file:

    GIMP3_DIRECTORY=DIR AIRB_GIMP_JOB=job.json \\
        gimp-console-3.0 -i --batch-interpreter=python-fu-eval -b - --quit < gimp_driver.py

job.json is {"output_dir": DIR, "cases": [CASE, ...], "dialog": BOOL}. Each case builds an image
and exports the pixels of the layers under test as 8-bit RGBA PNGs, the CLI's input for the
reference masks. Then it runs the procedure with the case's arguments and records what GIMP
reports in DIR/results.json: the return status and message, every layer with its pixels and mask,
the selection, a digest of the whole image before and after, and .xcf and .png files. With
"save_around", it also saves the image as .xcf just before and just after the procedure runs.

This driver asserts nothing, so one failing case does not hide the others. The test process
checks the results.
"""

import hashlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback

import gi

# gimp_keys.py lies beside this file; python-fu-eval runs this file's text, so __file__ is unset.
sys.path.insert(0, os.path.dirname(os.environ["AIRB_GIMP_DRIVER"]))

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Gegl, Gimp, Gio, GObject  # noqa: E402

PROCEDURE_NAME = "plug-in-ai-remove-background"
PLUGIN_NAME = "ai-remove-background"
WORKER_COMMAND_MARK = "ai_remove_background.worker"
PLUGIN_COMMAND_MARK = PLUGIN_NAME + ".py"
MASK_FORMAT = "Y u8"
PIXEL_FORMAT = "R'G'B'A u8"
DIGEST_FORMAT = "R'G'B'A float"
NONINTERACTIVE = Gimp.RunMode.NONINTERACTIVE


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------


def read_plane(drawable, format_name, x=0, y=0, width=None, height=None):
    width = drawable.get_width() if width is None else width
    height = drawable.get_height() if height is None else height
    rectangle = Gegl.Rectangle.new(x, y, width, height)
    return drawable.get_buffer().get(rectangle, 1.0, format_name, Gegl.AbyssPolicy.NONE)


def write_plane(drawable, format_name, data):
    width, height = drawable.get_width(), drawable.get_height()
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), format_name, data)
    buffer.flush()
    drawable.update(0, 0, width, height)


def ramp_alpha(layer):
    """Make the left quarter transparent and ramp alpha up to opaque over the next quarter."""
    layer.add_alpha()
    width, height = layer.get_width(), layer.get_height()
    pixels = bytearray(read_plane(layer, PIXEL_FORMAT))
    for x in range(width):
        if x < width // 4:
            alpha = 0
        elif x < width // 2:
            alpha = round(255 * (x - width // 4) / (width // 4))
        else:
            alpha = 255
        for y in range(height):
            pixels[(y * width + x) * 4 + 3] = alpha
    write_plane(layer, PIXEL_FORMAT, bytes(pixels))


def add_ramp_mask(layer):
    """Give the layer a mask whose value rises from 0 at the top row to 255 at the bottom row."""
    mask = layer.create_mask(Gimp.AddMaskType.WHITE)
    layer.add_mask(mask)
    width, height = layer.get_width(), layer.get_height()
    rows = [bytes([round(255 * y / (height - 1))]) * width for y in range(height)]
    write_plane(mask, MASK_FORMAT, b"".join(rows))


def add_mask_from_file(layer, path):
    """Give the layer a mask holding a grayscale image file of the layer's size."""
    mask_image = load_image(path)
    plane = read_plane(mask_image.get_layers()[0], MASK_FORMAT)
    mask_image.delete()
    mask = layer.create_mask(Gimp.AddMaskType.WHITE)
    layer.add_mask(mask)
    write_plane(mask, MASK_FORMAT, plane)


# --------------------------------------------------------------------------------------------
# Building each case's image
# --------------------------------------------------------------------------------------------


def load_image(path):
    return Gimp.file_load(NONINTERACTIVE, Gio.File.new_for_path(path))


def prepare(case):
    """Build the case's image and return it with the drawables to pass to the procedure."""
    image = load_image(case["source"])
    layer = image.get_layers()[0]
    layer.set_name("photo")

    if "precision" in case:
        image.convert_precision(getattr(Gimp.Precision, case["precision"]))
    if case.get("mode") == "gray":
        image.convert_grayscale()
    elif case.get("mode") == "indexed":
        image.convert_indexed(
            Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 255, False, False, ""
        )
    if "canvas" in case:
        image.resize(case["canvas"][0], case["canvas"][1], 0, 0)
    if "offset" in case:
        layer.set_offsets(*case["offset"])
    if case.get("alpha") == "ramp":
        ramp_alpha(layer)
    if case.get("existing_mask") == "ramp":
        add_ramp_mask(layer)
    elif "existing_mask_file" in case:
        add_mask_from_file(layer, case["existing_mask_file"])
    if "second_source" in case:
        second = Gimp.file_load_layer(NONINTERACTIVE, image, Gio.File.new_for_path(case["second_source"]))
        second.set_name("second photo")
        image.insert_layer(second, None, 0)
        second.set_offsets(*case.get("second_offset", (0, 0)))

    target = case.get("target", "layer")
    if target == "layer":
        drawables = [layer]
    elif target == "both layers":
        drawables = image.get_layers()
    elif target == "group":
        group = Gimp.GroupLayer.new(image, "group")
        image.insert_layer(group, None, 0)
        image.reorder_item(layer, group, 0)
        drawables = [group]
    elif target == "text":
        text = Gimp.TextLayer.new(image, "Cat", Gimp.Font.get_by_name("Sans-serif"), 60.0, Gimp.Unit.pixel())
        image.insert_layer(text, None, 0)
        text.set_offsets(20, 20)
        drawables = [text]
    elif target == "layer mask":
        layer.add_mask(layer.create_mask(Gimp.AddMaskType.WHITE))
        drawables = [layer.get_mask()]
    elif target == "channel":
        channel = Gimp.Channel.new(
            image, "saved", image.get_width(), image.get_height(), 50.0, Gegl.Color.new("red")
        )
        image.insert_channel(channel, None, 0)
        drawables = [channel]
    else:
        raise ValueError(f"unknown target {target!r}")

    if "selection" in case:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *case["selection"])
    # GIMP passes the layers selected in the Layers dockable.
    if all(isinstance(drawable, Gimp.Layer) for drawable in drawables):
        image.set_selected_layers(drawables)
    return image, drawables


def export_layer_png(drawable, path):
    """Save one drawable alone, at its own bounds, as an 8-bit RGBA PNG."""
    image = Gimp.Image.new(drawable.get_width(), drawable.get_height(), Gimp.ImageBaseType.RGB)
    copy = Gimp.Layer.new_from_drawable(drawable, image)
    image.insert_layer(copy, None, 0)
    copy.set_offsets(0, 0)
    if copy.get_mask() is not None:
        copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
    Gimp.file_save(NONINTERACTIVE, image, Gio.File.new_for_path(path), None)
    image.delete()


# --------------------------------------------------------------------------------------------
# Running the procedure
# --------------------------------------------------------------------------------------------


def make_config(procedure, image, drawables, arguments):
    config = procedure.create_config()
    config.set_property("run-mode", NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    for name, value in arguments.items():
        if name == "background-colour":
            value = Gegl.Color.new(value)  # a CSS colour such as "#ff8000", in sRGB
        config.set_property(name, value)
    return config


def process_table():
    """Return {pid: (process group, command line)} for the processes visible in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode("utf-8", "replace")
            table[int(entry)] = (os.getpgid(int(entry)), command)
        except (OSError, ProcessLookupError):
            continue
    return table


def find_process(mark):
    for pid, (group, command) in process_table().items():
        if mark in command:
            return pid, group
    return None


class CancelSimulation(threading.Thread):
    """Kill the plug-in's process group once its worker runs, as GIMP's Cancel button does.

    GIMP kills the plug-in's whole process group when it differs from GIMP's own, and only the
    plug-in's process otherwise.
    """

    def __init__(self, report):
        super().__init__(daemon=True)
        self.report = report

    def run(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            worker = find_process(WORKER_COMMAND_MARK)
            plugin = find_process(PLUGIN_COMMAND_MARK)
            if worker and plugin:
                # Let the worker receive the request, so the kill lands during inference.
                time.sleep(0.5)
                self.report["worker_group_is_plugin_group"] = worker[1] == plugin[1]
                self.report["plugin_group_differs_from_gimp"] = plugin[1] != os.getpgid(os.getppid())
                if plugin[1] != os.getpgid(os.getppid()):
                    os.killpg(plugin[1], signal.SIGKILL)
                else:
                    os.kill(plugin[0], signal.SIGKILL)
                self.report["killed"] = True
                return
            time.sleep(0.02)
        self.report["killed"] = False


class WorkerWatcher(threading.Thread):
    """Record whether a worker process appears while the procedure runs."""

    def __init__(self, report):
        super().__init__(daemon=True)
        self.report = report
        self.done = threading.Event()

    def run(self):
        self.report["seen"] = False
        while not self.done.is_set():
            if find_process(WORKER_COMMAND_MARK) is not None:
                self.report["seen"] = True
                return
            time.sleep(0.02)

    def join(self, timeout=None):
        self.done.set()
        super().join(timeout)


class DialogResponder(threading.Thread):
    """Wait for the plug-in's dialog to appear, focus it and press each shortcut in `shortcuts`."""

    def __init__(self, title, shortcuts, report):
        super().__init__(daemon=True)
        self.title, self.shortcuts, self.report = title, shortcuts, report

    def run(self):
        import gimp_keys

        connection = gimp_keys.XTestConnection()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                window = connection.find_window(self.title)
                if window is not None:
                    time.sleep(1.0)  # let GTK finish showing the dialog's widgets
                    connection.focus(window)
                    for shortcut in self.shortcuts:
                        connection.press(*shortcut)
                        time.sleep(0.3)
                    self.report["pressed"] = True
                    return
                time.sleep(0.2)
            self.report["pressed"] = False
            self.report["windows"] = list(connection.window_titles().values())
        finally:
            connection.close()


def press_in_image_window(keys):
    """Focus GIMP's main window (its title ends with "GIMP") and press a shortcut there."""
    import gimp_keys

    connection = gimp_keys.XTestConnection()
    try:
        for window, title in connection.window_titles().items():
            if title.endswith("GIMP"):
                connection.focus(window)
                break
        connection.press(*keys)
    finally:
        connection.close()


def wait_for_digest(image, expected, seconds):
    """Poll until the image's digest equals `expected`; return whether it did in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if image_digest(image) == expected:
            return True
        time.sleep(0.2)
    return False


def wait_for_worker_exit(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if find_process(WORKER_COMMAND_MARK) is None:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# Recording what GIMP reports
# --------------------------------------------------------------------------------------------


def all_layers(parent_layers):
    for layer in parent_layers:
        yield layer
        if isinstance(layer, Gimp.GroupLayer):
            yield from all_layers(layer.get_children())


def image_digest(image):
    """Return a SHA-256 over everything the procedure may change: layers, masks, selection, channels."""
    digest = hashlib.sha256()
    digest.update(f"{image.get_width()}x{image.get_height()} {len(image.get_channels())}".encode())
    for layer in all_layers(image.get_layers()):
        offsets = layer.get_offsets()[1:]
        digest.update(f"{layer.get_name()} {type(layer).__name__} {offsets} {layer.get_visible()}".encode())
        digest.update(read_plane(layer, DIGEST_FORMAT))
        if layer.get_mask() is not None:
            digest.update(read_plane(layer.get_mask(), DIGEST_FORMAT))
    if not Gimp.Selection.is_empty(image):
        digest.update(read_plane(image.get_selection(), MASK_FORMAT))
    return digest.hexdigest()


def record_image(image, prefix):
    """Write every layer's pixels and mask, and the selection, as raw files, and return their description."""
    layers = []
    for index, layer in enumerate(all_layers(image.get_layers())):
        parent = layer.get_parent()
        entry = {
            "name": layer.get_name(),
            "type": type(layer).__name__,
            "parent": parent.get_name() if parent is not None else None,
            "position": image.get_item_position(layer),
            "offsets": list(layer.get_offsets()[1:]),
            "width": layer.get_width(),
            "height": layer.get_height(),
            "visible": layer.get_visible(),
            "has_alpha": layer.has_alpha(),
            "pixels": f"{prefix}-layer{index}.rgba",
            "mask": None,
        }
        with open(entry["pixels"], "wb") as file:
            file.write(read_plane(layer, PIXEL_FORMAT))
        if layer.get_mask() is not None:
            entry["mask"] = f"{prefix}-layer{index}.mask"
            with open(entry["mask"], "wb") as file:
                file.write(read_plane(layer.get_mask(), MASK_FORMAT))
        layers.append(entry)

    selection = None
    if not Gimp.Selection.is_empty(image):
        selection = f"{prefix}-selection.raw"
        with open(selection, "wb") as file:
            file.write(read_plane(image.get_selection(), MASK_FORMAT))
    return {
        "width": image.get_width(),
        "height": image.get_height(),
        "base_type": image.get_base_type().value_nick,
        "precision": image.get_precision().value_nick,
        "channels": [channel.get_name() for channel in image.get_channels()],
        "selected_layers": [layer.get_name() for layer in image.get_selected_layers()],
        "layers": layers,
        "selection": selection,
    }


def engine_file():
    return os.path.join(os.environ["GIMP3_DIRECTORY"], "plug-ins", PLUGIN_NAME, "engine.json")


def override_engine(changes):
    """Change the installed engine.json for one case; return its original text for restore_engine."""
    with open(engine_file(), encoding="utf-8") as file:
        original = file.read()
    config = json.loads(original)
    for key, value in changes.items():
        if key == "environment":
            config["environment"].update(value)
        else:
            config[key] = value
    with open(engine_file(), "w", encoding="utf-8") as file:
        json.dump(config, file)
    return original


def restore_engine(original):
    with open(engine_file(), "w", encoding="utf-8") as file:
        file.write(original)


def run_case(procedure, case, output_dir):
    if "engine" not in case:
        return run_case_with_engine(procedure, case, output_dir)
    original = override_engine(case["engine"])
    try:
        return run_case_with_engine(procedure, case, output_dir)
    finally:
        restore_engine(original)


def run_case_with_engine(procedure, case, output_dir):
    result = {"name": case["name"]}
    prefix = os.path.join(output_dir, case["name"])
    image, drawables = prepare(case)
    result["source_pngs"] = {}
    if case.get("export_source", True):
        for index, drawable in enumerate(drawables):
            path = f"{prefix}-source{index}.png"
            export_layer_png(drawable, path)
            result["source_pngs"][drawable.get_name()] = path
    result["before"] = image_digest(image)
    result["before_selection_empty"] = Gimp.Selection.is_empty(image)
    if case.get("save_around"):
        result["xcf_before"] = prefix + ".before.xcf"
        Gimp.file_save(NONINTERACTIVE, image, Gio.File.new_for_path(result["xcf_before"]), None)
    display = Gimp.Display.new(image) if case.get("display") else None
    Gimp.displays_flush()

    helpers = []
    cancel_report = {}
    if case.get("cancel"):
        helpers.append(CancelSimulation(cancel_report))
    worker_report = {}
    if case.get("watch_worker"):
        helpers.append(WorkerWatcher(worker_report))
    config = make_config(procedure, image, drawables, case.get("args", {}))
    dialog_report = {}
    if "dialog_shortcuts" in case:
        # An interactive run shows the dialog, which starts from the last values GIMP stored.
        config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
        helpers.append(DialogResponder("AI Remove Background", case["dialog_shortcuts"], dialog_report))
    for helper in helpers:
        helper.start()
    started = time.monotonic()
    values = procedure.run(config)
    result["seconds"] = time.monotonic() - started
    for helper in helpers:
        helper.join(timeout=60)
    status = values.index(0)
    result["status"] = status.value_nick
    result["message"] = (
        values.index(1) if status != Gimp.PDBStatusType.SUCCESS and values.length() > 1 else ""
    )
    if case.get("cancel"):
        result["cancel"] = cancel_report
        result["worker_exited"] = wait_for_worker_exit(10)
    if case.get("watch_worker"):
        result["worker_seen"] = worker_report["seen"]
        result["worker_exited"] = wait_for_worker_exit(10)
    if "dialog_shortcuts" in case:
        result["dialog"] = dialog_report

    result["after"] = image_digest(image)
    if case.get("save_around"):
        result["xcf_after"] = prefix + ".after.xcf"
        Gimp.file_save(NONINTERACTIVE, image, Gio.File.new_for_path(result["xcf_after"]), None)
    if case.get("undo"):
        Gimp.displays_flush()
        press_in_image_window(["Control_L", "z"])
        result["undo_restored"] = wait_for_digest(image, result["before"], 20)
        press_in_image_window(["Control_L", "y"])
        result["redo_restored"] = wait_for_digest(image, result["after"], 20)
    result["image"] = record_image(image, prefix)
    if case.get("save"):
        result["xcf"] = prefix + ".xcf"
        result["png"] = prefix + ".png"
        Gimp.file_save(NONINTERACTIVE, image, Gio.File.new_for_path(result["xcf"]), None)
        Gimp.file_save(NONINTERACTIVE, image, Gio.File.new_for_path(result["png"]), None)
    if display is not None:
        display.delete()
    else:
        image.delete()
    return result


# --------------------------------------------------------------------------------------------
# The procedure's registration and dialog
# --------------------------------------------------------------------------------------------


def describe_procedure(procedure):
    arguments = {}
    for spec in procedure.get_arguments():
        entry = {"type": type(spec).__name__}
        if isinstance(spec, Gimp.ParamChoice):
            choice = Gimp.param_spec_choice_get_choice(spec)
            entry["choices"] = choice.list_nicks()
            entry["default"] = Gimp.param_spec_choice_get_default(spec)
        elif hasattr(spec, "get_default_value"):
            default = spec.get_default_value()
            entry["default"] = default if isinstance(default, (bool, int, float, str)) else None
        arguments[spec.get_name()] = entry
    return {
        "menu_label": procedure.get_menu_label(),
        "menu_paths": procedure.get_menu_paths(),
        "image_types": procedure.get_image_types(),
        "sensitivity": int(procedure.get_sensitivity_mask()),
        "drawable_flags": {
            "drawable": int(Gimp.ProcedureSensitivityMask.DRAWABLE),
            "drawables": int(Gimp.ProcedureSensitivityMask.DRAWABLES),
        },
        "arguments": arguments,
    }


def describe_dialog(procedure):
    """Build the plug-in's own dialog (needs a display) and return the widget type of each argument."""
    script = os.path.join(os.environ["GIMP3_DIRECTORY"], "plug-ins", PLUGIN_NAME, PLUGIN_COMMAND_MARK)
    spec = importlib.util.spec_from_file_location("ai_remove_background_plugin", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    config = procedure.create_config()
    dialog = module.build_dialog(procedure, config)
    widgets = {}
    for argument in procedure.get_arguments():
        name = argument.get_name()
        if name in ("run-mode", "image", "drawables"):
            continue
        widget = dialog.get_widget(name, GObject.TYPE_NONE)
        widgets[name] = type(widget).__name__ if widget is not None else None
    title = dialog.get_title()
    mnemonic_labels = [label for label in widget_labels(dialog) if "_" in label]
    dialog.destroy()
    return {"title": title, "widgets": widgets, "mnemonic_labels": mnemonic_labels}


def widget_labels(widget):
    """Return the text of every label with a mnemonic in a widget tree, buttons included."""
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    labels = []
    if isinstance(widget, Gtk.Label) and widget.get_use_underline():
        labels.append(widget.get_label())
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            labels.extend(widget_labels(child))
    return labels


def main():
    with open(os.environ["AIRB_GIMP_JOB"], encoding="utf-8") as file:
        job = json.load(file)
    output_dir = job["output_dir"]
    results = {"cases": {}}
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE_NAME)
    results["registered"] = procedure is not None
    if procedure is not None:
        results["procedure"] = describe_procedure(procedure)
        if job.get("dialog"):
            try:
                results["dialog"] = describe_dialog(procedure)
            except Exception:
                results["dialog"] = {"error": traceback.format_exc()}
        for case in job.get("cases", []):
            try:
                results["cases"][case["name"]] = run_case(procedure, case, output_dir)
            except Exception:
                results["cases"][case["name"]] = {
                    "name": case["name"],
                    "driver_error": traceback.format_exc(),
                }
    with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
