"""Drive the AI Remove Background plug-in inside a real Krita GUI session, case by case.

The JSON scenario file named by AIRB_KRITA_SCENARIO has `results` (path of the JSON written at
the end), `output_dir`, `watchdog_seconds`, `case_timeout_seconds` and `cases`. Each case has
a `name` and a file to `open`, and optionally:

- `batch` (default true): Krita's batch mode, in which the plug-in shows no dialogs
- `settings`: the plug-in's stored options, on top of DEFAULT_SETTINGS
- `color_space` [model, depth, profile], `layer_offset` [dx, dy], `wrap_in_group`,
  `duplicate_layer` [dx, dy], `selection` [x, y, width, height], `target` ("filter_layer" or
  "empty_layer"): how to prepare the document
- `select_all_layers`: select every layer before the run
- `trigger`: "menu" opens the Filter menu and activates the item with the Return key; any
  other value triggers the registered action
- `dialog` {control name: value} and `dialog_cancel`: how to fill in the options dialog
- `cancel`: press the progress dialog's Cancel button at once
- `export_before`, `save`: export a PNG before the run, save .kra and export .png after it
- `undo`: how many times to trigger Edit > Undo after the run
- `crop_layer` [x, y, width, height]: crop the opened layer (after `duplicate_layer` copied it)
- `engine` {key: value}: replace keys of the installed engine.json for this case ("environment"
  is merged); the original file is restored when the case ends
- `save_around`: save .kra just before and just after the run
- `hint_mask_raw` [path, width, height]: give the target a transparency mask "My mask" holding
  these 8-bit samples
- `watch_worker`: record whether a worker process is left running after the run

The driver records the layer tree before and after, the plug-in's `last_outcome`, the texts
of message boxes and raw dumps of the masks it created. Assertions live in the tests. Krita
exits with os._exit because Krita does not pass Python errors on as its exit status.
"""

import json
import os
import sys
import time
import traceback

from krita import Extension, InfoObject, Krita, Selection
from PyQt5.QtCore import QEvent, QPoint, Qt, QTimer
from PyQt5.QtGui import QKeyEvent
from PyQt5.QtWidgets import QApplication, QDialog, QMessageBox, QProgressDialog, QPushButton

PLUGIN_PACKAGE = "ai_remove_background"
ACTION_ID = "ai_remove_background"
ACTION_TEXT = "AI Remove Background"
FILTER_MENU_NAME = "filter"
TICK_MS = 200
POLL_MS = 100
DEFAULT_SETTINGS = {
    "model": "isnet",
    "refine": "true",
    "grow": "0",
    "feather": "0",
    "output": "mask",
    "background": "color",
    "background_color": "#ffffff",
    "blur_radius": "20",
    "limit_to_selection": "true",
    "refine_from_mask": "false",
}
SAMPLE_BYTES = {"U8": 1, "U16": 2, "F16": 2, "F32": 4}
WORKER_COMMAND_MARK = "ai_remove_background.worker"
WORKER_EXIT_SECONDS = 10
STARTED = time.monotonic()


def log(*parts):
    print(f"[krita-test-driver {time.monotonic() - STARTED:.2f}s]", *parts, flush=True)


def node_tree(node):
    """Describe a node and its children (bottom to top, as Krita lists them)."""
    bounds = node.bounds()
    return {
        "name": node.name(),
        "type": node.type(),
        "bounds": [bounds.x(), bounds.y(), bounds.width(), bounds.height()],
        "color": [node.colorModel(), node.colorDepth(), node.colorProfile()],
        "visible": node.visible(),
        "children": [node_tree(child) for child in node.childNodes()],
    }


def engine_file():
    return os.path.join(os.path.dirname(sys.modules[PLUGIN_PACKAGE].__file__), "engine.json")


def worker_running():
    """Return whether a process whose command line names the worker module is running."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if WORKER_COMMAND_MARK.encode() in file.read():
                    return True
        except OSError:
            continue
    return False


def find_nodes(node, name):
    found = [node] if node.name() == name else []
    for child in node.childNodes():
        found += find_nodes(child, name)
    return found


def menu_paths(main_window, action_text):
    """Return the menu paths (object names or titles) of every menu item with this text."""
    paths = []

    def walk(menu, path):
        for action in menu.actions():
            if action.menu() is not None:
                walk(action.menu(), path + [action.menu().objectName() or action.text()])
            elif action.text().replace("&", "") == action_text:
                paths.append("/".join(path))

    for action in main_window.menuBar().actions():
        if action.menu() is not None:
            walk(action.menu(), [action.menu().objectName() or action.text()])
    return paths


def filter_menu(main_window):
    for action in main_window.menuBar().actions():
        menu = action.menu()
        if menu is not None and FILTER_MENU_NAME in (menu.objectName().lower(), action.text().replace("&", "").lower()):
            return menu
    return None


class ScenarioDriver(Extension):
    def setup(self):
        with open(os.environ["AIRB_KRITA_SCENARIO"], encoding="utf-8") as file:
            self.scenario = json.load(file)
        self.results = {"krita_version": Krita.instance().version(), "cases": []}
        self.case_index = -1
        self.case = None
        self.record = None
        self.document = None
        self.modal_timer = None
        Krita.instance().notifier().windowCreated.connect(self.on_window_created)
        QTimer.singleShot(int(self.scenario.get("watchdog_seconds", 900) * 1000), self.on_watchdog)

    def createActions(self, window):
        pass

    # ----------------------------------------------------------------- session
    def on_window_created(self):
        log("window created")
        QTimer.singleShot(TICK_MS, self.next_case)

    def on_watchdog(self):
        log("watchdog: the scenario did not finish in time")
        self.results["watchdog"] = True
        if self.record is not None:
            self.record["driver_error"] = self.record.get("driver_error") or "watchdog timeout during this case"
            self.results["cases"].append(self.record)
        self.exit(3)

    def exit(self, status):
        with open(self.scenario["results"], "w", encoding="utf-8") as file:
            json.dump(self.results, file, indent=1)
        log("exit", status)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    def plugin(self):
        return sys.modules[PLUGIN_PACKAGE].EXTENSION

    def guarded(self, step):
        """Wrap one step of a case, so that an exception ends the case and is recorded."""

        def run():
            try:
                step()
            except Exception:
                log(traceback.format_exc())
                self.record["driver_error"] = traceback.format_exc()
                self.end_case()

        return run

    # ----------------------------------------------------------------- one case
    def next_case(self):
        self.case_index += 1
        cases = self.scenario["cases"]
        if self.case_index >= len(cases):
            self.exit(0)
            return
        self.case = cases[self.case_index]
        self.record = {"name": self.case["name"], "driver_error": "", "started": time.monotonic()}
        self.original_engine = None
        log("case", self.case["name"])
        self.guarded(self.open_document)()

    def open_document(self):
        log("open document")
        krita = Krita.instance()
        krita.setBatchmode(self.case.get("batch", True))
        for name, value in dict(DEFAULT_SETTINGS, **self.case.get("settings", {})).items():
            krita.writeSetting(PLUGIN_PACKAGE, name, str(value))
        document = krita.openDocument(self.case["open"])
        if document is None:
            raise RuntimeError(f"openDocument failed for {self.case['open']}")
        document.setBatchmode(True)
        krita.activeWindow().addView(document)
        document.waitForDone()
        self.document = document
        QTimer.singleShot(TICK_MS, self.guarded(self.prepare_document))

    def prepare_document(self):
        log("prepare document")
        document = self.document
        layer = document.topLevelNodes()[0]
        if "engine" in self.case:
            self.override_engine(self.case["engine"])
        if "color_space" in self.case:
            model, depth, profile = self.case["color_space"]
            if not document.setColorSpace(model, depth, profile):
                raise RuntimeError(f"setColorSpace({model}, {depth}, {profile}) failed")
            document.waitForDone()
        if "layer_offset" in self.case:
            layer.move(*self.case["layer_offset"])
            document.waitForDone()

        target = self.add_layers(document, layer)
        if "hint_mask_raw" in self.case:
            path, width, height = self.case["hint_mask_raw"]
            with open(path, "rb") as file:
                data = file.read()
            mask = document.createTransparencyMask("My mask")
            target.addChildNode(mask, None)
            if mask.setPixelData(data, 0, 0, width, height) is False:
                raise RuntimeError("Krita rejected the hint mask's pixels")
        if "selection" in self.case:
            selection = Selection()
            selection.select(*self.case["selection"], 255)
            document.setSelection(selection)
        document.refreshProjection()
        document.waitForDone()

        self.target_id = target.uniqueId()
        bounds = target.bounds()
        self.record["target"] = {"name": target.name(), "type": target.type(),
                                 "bounds": [bounds.x(), bounds.y(), bounds.width(), bounds.height()]}
        if self.case.get("export_before"):
            info = InfoObject()
            info.setProperty("alpha", True)
            self.record["png_before"] = os.path.join(self.scenario["output_dir"], self.case["name"] + ".before.png")
            self.record["png_before_exported"] = bool(document.exportImage(self.record["png_before"], info))
        self.activation_attempts = 0
        QTimer.singleShot(0, self.guarded(self.activate_target))

    def override_engine(self, changes):
        with open(engine_file(), encoding="utf-8") as file:
            self.original_engine = file.read()
        config = json.loads(self.original_engine)
        for key, value in changes.items():
            if key == "environment":
                config["environment"].update(value)
            else:
                config[key] = value
        with open(engine_file(), "w", encoding="utf-8") as file:
            json.dump(config, file)

    def restore_engine(self):
        if self.original_engine is not None:
            with open(engine_file(), "w", encoding="utf-8") as file:
                file.write(self.original_engine)
            self.original_engine = None

    def add_layers(self, document, layer):
        """Add the layers the case asks for, and return the layer the plug-in should work on."""
        root = document.rootNode()
        target = layer
        if self.case.get("wrap_in_group"):
            target = document.createGroupLayer("Group")
            root.addChildNode(target, layer)
            target.addChildNode(layer.duplicate(), None)
            layer.remove()
        if "duplicate_layer" in self.case:
            copy = layer.duplicate()
            copy.setName("Copy")
            root.addChildNode(copy, layer)
            copy.move(*self.case["duplicate_layer"])
        if "crop_layer" in self.case:
            layer.cropNode(*self.case["crop_layer"])
        if self.case.get("target") == "filter_layer":
            canvas = Selection()
            canvas.select(0, 0, document.width(), document.height(), 255)
            target = document.createFilterLayer("Invert", Krita.instance().filter("invert"), canvas)
            root.addChildNode(target, None)
        if self.case.get("target") == "empty_layer":
            target = document.createNode("Empty", "paintlayer")
            root.addChildNode(target, None)
        document.waitForDone()
        return target

    def activate_target(self):
        """Make the target the active node, repeating until Krita reports it active.

        Krita applies setActiveNode after the current event, and it may meanwhile activate a
        node that the preparation added or removed.
        """
        active = self.document.activeNode()
        if active is None or active.uniqueId() != self.target_id:
            self.activation_attempts += 1
            if self.activation_attempts > 50:
                raise RuntimeError("the target layer did not become active")
            self.document.setActiveNode(self.document.nodeByUniqueID(self.target_id))
            QTimer.singleShot(POLL_MS, self.guarded(self.activate_target))
            return
        if self.case.get("select_all_layers"):
            Krita.instance().action("select_all_layers").trigger()
        QTimer.singleShot(TICK_MS, self.guarded(self.trigger))

    def trigger(self):
        log("trigger")
        krita = Krita.instance()
        document = self.document
        active = document.activeNode()
        self.record["active_node"] = active.name() if active is not None else None
        view = krita.activeWindow().activeView()
        self.record["selected_nodes"] = [node.name() for node in view.selectedNodes()]
        self.record["layers_before"] = [node_tree(node) for node in document.topLevelNodes()]
        if self.case.get("save_around"):
            self.record["kra_before"] = os.path.join(self.scenario["output_dir"], self.case["name"] + ".before.kra")
            self.record["kra_before_saved"] = bool(document.saveAs(self.record["kra_before"]))
            document.waitForDone()
        main_window = krita.activeWindow().qwindow()
        self.record["menu_paths"] = menu_paths(main_window, ACTION_TEXT)
        self.runs_before = self.plugin().run_count
        self.record["modal_texts"] = []
        self.modal_timer = QTimer()
        self.modal_timer.setInterval(POLL_MS)
        self.modal_timer.timeout.connect(self.answer_modal_windows)
        self.modal_timer.start()

        if self.case.get("trigger") == "menu":
            menu = filter_menu(main_window)
            if menu is None:
                raise RuntimeError("the Filter menu was not found")
            item = next((action for action in menu.actions() if action.objectName() == ACTION_ID), None)
            self.record["menu_item_enabled"] = item is not None and item.isEnabled()
            if item is None:
                raise RuntimeError(f"the Filter menu has no item {ACTION_ID!r}")
            # Open the menu, highlight the item and press Return, as a keyboard user would.
            menu.popup(main_window.mapToGlobal(QPoint(10, 10)))
            QApplication.processEvents()
            menu.setActiveAction(item)
            QApplication.sendEvent(menu, QKeyEvent(QEvent.KeyPress, Qt.Key_Return, Qt.NoModifier))
            QApplication.sendEvent(menu, QKeyEvent(QEvent.KeyRelease, Qt.Key_Return, Qt.NoModifier))
        else:
            action = krita.action(ACTION_ID)
            if action is None:
                raise RuntimeError(f"Krita has no action {ACTION_ID!r}")
            action.trigger()
        self.record["triggered"] = True
        if self.case.get("cancel"):
            QTimer.singleShot(0, self.guarded(self.cancel_progress))
        self.deadline = time.monotonic() + self.scenario.get("case_timeout_seconds", 300)
        QTimer.singleShot(POLL_MS, self.guarded(self.wait_for_result))

    def answer_modal_windows(self):
        """Fill in and accept the options dialog, and record and close message boxes."""
        for widget in QApplication.topLevelWidgets():
            if not widget.isVisible():
                continue
            if isinstance(widget, QMessageBox):
                self.record["modal_texts"].append(widget.text())
                widget.accept()
            elif isinstance(widget, QDialog) and widget.objectName() == "ai_remove_background_options":
                self.record["options_dialog_seen"] = True
                for name, value in self.case.get("dialog", {}).items():
                    control = getattr(widget, name)
                    if hasattr(control, "findData"):
                        control.setCurrentIndex(control.findData(value))
                    elif hasattr(control, "setChecked"):
                        control.setChecked(bool(value))
                    else:
                        control.setValue(value)
                if self.case.get("dialog_cancel"):
                    widget.reject()
                else:
                    widget.accept()

    def cancel_progress(self):
        log("cancel progress")
        dialogs = [widget for widget in QApplication.topLevelWidgets()
                   if isinstance(widget, QProgressDialog) and widget.isVisible()]
        self.record["progress_dialog_seen"] = bool(dialogs)
        for dialog in dialogs:
            buttons = [button for button in dialog.findChildren(QPushButton) if button.text().replace("&", "") == "Cancel"]
            self.record["cancel_button_seen"] = bool(buttons)
            for button in buttons:
                button.click()

    def wait_for_result(self):
        plugin = self.plugin()
        job = plugin.job
        finished = plugin.run_count > self.runs_before and not (job is not None and job.is_running())
        dialog_closed = self.case.get("dialog_cancel") and self.record.get("options_dialog_seen")
        if not finished and not dialog_closed:
            if time.monotonic() > self.deadline:
                raise RuntimeError("no result within the case timeout")
            QTimer.singleShot(POLL_MS, self.guarded(self.wait_for_result))
            return
        self.record["outcome"] = dict(plugin.last_outcome) if finished else None
        if self.case.get("watch_worker"):
            deadline = time.monotonic() + WORKER_EXIT_SECONDS
            while worker_running() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.record["worker_left_running"] = worker_running()
        QTimer.singleShot(TICK_MS, self.guarded(self.collect))

    def collect(self):
        log("collect")
        krita = Krita.instance()
        document = self.document
        document.waitForDone()
        self.record["layers_after"] = [node_tree(node) for node in document.topLevelNodes()]
        self.record["settings_after"] = {name: krita.readSetting(PLUGIN_PACKAGE, name, "") for name in DEFAULT_SETTINGS}
        self.record["seconds"] = time.monotonic() - self.record["started"]
        output = self.scenario["output_dir"]
        stem = os.path.join(output, self.case["name"])
        x, y, width, height = self.record["target"]["bounds"]

        dumps = {}
        created = (self.record.get("outcome") or {}).get("created", [])
        for name in dict.fromkeys(created):
            for index, node in enumerate(find_nodes(document.rootNode(), name)):
                path = f"{stem}.node{index}-{node.type()}.raw"
                if node.type() == "transparencymask":
                    bounds = node.parentNode().bounds()
                    box = [bounds.x(), bounds.y(), bounds.width(), bounds.height()]
                    data = bytes(node.pixelData(*box))
                    kind = "mask"
                elif node.type() == "paintlayer":
                    # The alpha samples in the layer's own depth. Alpha is the last sample of a pixel.
                    box = [x, y, width, height]
                    data = bytes(node.pixelData(*box))
                    pixel_bytes = len(data) // (width * height)
                    sample_bytes = SAMPLE_BYTES[node.colorDepth()]
                    data = b"".join(data[start + pixel_bytes - sample_bytes:start + pixel_bytes]
                                    for start in range(0, len(data), pixel_bytes))
                    kind = "alpha"
                else:
                    continue
                with open(path, "wb") as file:
                    file.write(data)
                dumps.setdefault(name, []).append({"file": path, "kind": kind, "type": node.type(), "bounds": box,
                                                   "depth": node.colorDepth()})
        self.record["dumps"] = dumps
        selection = document.selection()
        if selection is not None:
            path = stem + ".selection.raw"
            with open(path, "wb") as file:
                file.write(bytes(selection.pixelData(x, y, width, height)))
            self.record["selection"] = {"file": path, "bounds": [x, y, width, height]}

        if self.case.get("save_around"):
            self.record["kra_after"] = os.path.join(output, self.case["name"] + ".after.kra")
            self.record["kra_after_saved"] = bool(document.saveAs(self.record["kra_after"]))
            document.waitForDone()

        if self.case.get("save"):
            log("saving")
            self.record["kra"] = stem + ".kra"
            self.record["kra_saved"] = bool(document.saveAs(self.record["kra"]))
            info = InfoObject()
            info.setProperty("alpha", True)
            info.setProperty("saveSRGBProfile", False)
            log("exporting")
            self.record["png"] = stem + ".png"
            self.record["png_exported"] = bool(document.exportImage(self.record["png"], info))
            document.waitForDone()

        if self.case.get("undo"):
            undo = krita.action("edit_undo")
            for _ in range(self.case["undo"]):
                undo.trigger()
                document.waitForDone()
            self.record["layers_after_undo"] = [node_tree(node) for node in document.topLevelNodes()]
        self.end_case()

    def end_case(self):
        log("end case")
        self.restore_engine()
        if self.modal_timer is not None:
            self.modal_timer.stop()
            self.modal_timer = None
        if self.document is not None:
            # A modified document would ask whether to save it when its view closes.
            self.document.setModified(False)
            self.document.close()
            self.document = None
        self.record.pop("started", None)
        self.results["cases"].append(self.record)
        self.record = None
        QTimer.singleShot(TICK_MS, self.next_case)
