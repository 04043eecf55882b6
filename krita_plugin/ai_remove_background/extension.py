"""The Filter > AI Remove Background action: gathers the layers, runs the worker, applies the result."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtGui import QIcon
from PyQt5.QtWidgets import QDialog, QMessageBox

from .job import CANCELLED, DONE, FAILED, WorkerJob
from .layers import (
    LayerRequest,
    PluginError,
    add_cutout_layer,
    add_transparency_mask,
    create_background_layer,
    fill_blurred_background,
    insert_below,
    is_below,
    mask_name,
    read_layer,
    set_selection,
    target_layers,
)
from .options import (
    BACKGROUND_BLUR,
    OUTPUT_BACKGROUND,
    OUTPUT_LAYER,
    OUTPUT_SELECTION,
    Options,
    load_options,
    save_options,
)
from .options_dialog import OptionsDialog

ACTION_ID = "ai_remove_background"
ACTION_TEXT = "AI Remove Background"
MESSAGE_TITLE = "AI Remove Background"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
FLOATING_MESSAGE_MS = 8000
FLOATING_MESSAGE_PRIORITY = 1  # Krita's medium priority
# Interval and number of checks that Krita made the new background layer active.
ACTIVATION_POLL_MS = 50
ACTIVATION_POLL_ATTEMPTS = 40

logger = logging.getLogger("ai_remove_background")
if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[ai-remove-background] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class RemoveBackgroundExtension(Extension):
    """Adds the action to Krita's Filter menu and runs it.

    In Krita's batch mode (`Krita.instance().setBatchmode(True)`, used by scripts) the options
    dialog and message boxes are skipped: the action uses the options stored by the last run,
    and reports errors as a floating message on the canvas and in `last_outcome`.
    """

    def __init__(self, parent: Any) -> None:
        super().__init__(parent)
        self.client: Any = None
        # engine.json's modification time and size when self.client was made from it.
        self._engine_stamp: tuple[int, int] | None = None
        self.job: WorkerJob | None = None
        self.run_count = 0
        # Result of the last run: {"run", "status" (done, cancelled, error), "message", "created"}.
        self.last_outcome: dict[str, Any] = {}
        self._document: Any = None
        self._options = Options()

    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:
        action = window.createAction(ACTION_ID, ACTION_TEXT, "filter")
        action.setToolTip("Hide the background of the selected layers with a transparency mask computed by an AI model")
        action.triggered.connect(self.run)

    # ----------------------------------------------------------------- starting a run
    def run(self) -> None:
        try:
            self._start(Krita.instance())
        except PluginError as error:
            self._finish(FAILED, str(error))
        except Exception as error:  # a bug: show it rather than lose it in Krita's log
            logger.exception("starting the run failed")
            self._finish(FAILED, f"AI Remove Background failed ({type(error).__name__}: {error}): please report this.")

    def _start(self, krita: Any) -> None:
        if self.job is not None and self.job.is_running():
            raise PluginError("AI Remove Background is already running: wait for it to finish or cancel it.")
        window = krita.activeWindow()
        view = window.activeView() if window is not None else None
        document = view.document() if view is not None else None
        if document is None:
            raise PluginError("No image is open: open an image, select a layer and run Filter > AI Remove Background.")
        layers = target_layers(view, document)

        options = load_options(krita)
        if not krita.batchmode():
            dialog = OptionsDialog(options, document.selection() is not None, [layer.name() for layer in layers],
                                   window.qwindow())
            if dialog.exec_() != QDialog.Accepted:
                return
            options = dialog.options()
            save_options(krita, options)

        requests = [read_layer(document, layer, options.limit_to_selection, options.refine_from_mask)
                    for layer in layers]
        for request in requests:
            logger.info("layer %r: %dx%d at (%d, %d), %s%s%s%s", request.name, request.width, request.height,
                        request.x, request.y, request.sample,
                        f", converted from {request.converted_from}" if request.converted_from else "",
                        ", limited to the selection" if request.limit is not None else "",
                        ", refining its transparency mask" if request.hint is not None else "")
        client = self._worker_client()
        self._document = document
        self._options = options
        self.job = WorkerJob(client, requests, options.engine_options(), window.qwindow(), self._on_job_finished)
        self.job.start()

    def _worker_client(self) -> Any:
        """Return the worker client, made anew when engine.json changed or the engine failed to start."""
        try:
            from . import worker_client
        except ImportError:
            raise PluginError(
                f"worker_client.py is missing from {PLUGIN_DIR}: run 'python3 install.py' in the "
                "ai-remove-background folder, then restart Krita."
            ) from None
        try:
            status = os.stat(os.path.join(PLUGIN_DIR, worker_client.ENGINE_FILE_NAME))
            stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except OSError:
            stamp = None  # from_plugin_dir reports the missing file
        if self.client is not None and stamp != self._engine_stamp:
            logger.info("engine.json changed; starting the engine it names")
            self.client.close()
            self.client = None
        if self.client is None:
            try:
                self.client = worker_client.WorkerClient.from_plugin_dir(PLUGIN_DIR)
            except worker_client.WorkerError as error:
                raise PluginError(str(error)) from None
            self._engine_stamp = stamp
        return self.client

    # ----------------------------------------------------------------- applying the result
    def _on_job_finished(self, job: WorkerJob) -> None:
        """Apply the finished layers' masks. After a failure, the layers before it are still done."""
        if job.status == CANCELLED:
            self._finish(CANCELLED, "Cancelled: the image was not changed.")
            return
        finished = [request for request in job.requests if request.reply]
        if job.status == FAILED:
            if job.error_code == "engine_missing":
                self.client = None  # read engine.json again next time, in case install.py ran since
            if not finished:
                self._finish(FAILED, f"Removing the background failed: {job.error_message}")
                return
        try:
            created, pending_moves = self._apply(self._document, finished, self._options)
        except PluginError as error:
            self._finish(FAILED, str(error))
            return
        except Exception as error:  # a bug: show it rather than lose it in Krita's log
            logger.exception("applying the result failed")
            self._finish(FAILED, f"Applying the mask failed ({type(error).__name__}: {error}): please report this.")
            return
        status, summary = DONE, self._summary(finished, self._options)
        if job.status == FAILED:
            untouched = ", ".join(f"'{request.name}'" for request in job.requests[len(finished):])
            status = FAILED
            summary = (f"Removing the background failed: {job.error_message}. {summary} "
                       f"Left unchanged: {untouched}.")
        if pending_moves:
            self._move_backgrounds_down(self._document, pending_moves, created, summary, status)
        else:
            self._finish(status, summary, created)

    def _apply(self, document: Any, requests: list[LayerRequest], options: Options) -> tuple[list[str], list[Any]]:
        """Write the masks into the document, and return the names of new nodes and the pending moves."""
        if document.rootNode() is None:
            raise PluginError("The image was closed while the model ran: nothing was changed.")
        nodes = []
        for request in requests:
            node = document.nodeByUniqueID(request.node_id)
            if node is None:
                raise PluginError(f"Layer '{request.name}' was deleted while the model ran: nothing was changed.")
            nodes.append(node)

        if options.output == OUTPUT_SELECTION:
            set_selection(document, requests)
            return [], []

        created: list[Any] = []
        pending_moves: list[Any] = []
        try:
            for node, request in zip(nodes, requests):
                if options.output == OUTPUT_LAYER:
                    created.append(add_cutout_layer(document, node, request))
                    continue
                if options.output == OUTPUT_BACKGROUND:
                    # The background copies what the layer shows, so it is made before the mask.
                    background = create_background_layer(document, node, request, options)
                    needs_move = insert_below(node, background)
                    created.append(background)
                    if options.background == BACKGROUND_BLUR:
                        fill_blurred_background(node, background, request, options)
                    if needs_move:
                        pending_moves.append((node, background))
                created.append(add_transparency_mask(document, node, request, mask_name(options)))
        except Exception:
            for node in reversed(created):
                node.remove()
            raise
        for request in requests if options.output != OUTPUT_LAYER else []:
            refined = document.nodeByUniqueID(request.hint_node_id) if request.hint_node_id is not None else None
            if refined is not None:
                # The new mask keeps the refined mask's black and white, so it takes its place.
                refined.remove()
        document.refreshProjection()
        return [node.name() for node in created], pending_moves

    def _move_backgrounds_down(
        self, document: Any, moves: list[Any], created: list[str], summary: str, status: str = DONE
    ) -> None:
        """Move each new background below its layer with Krita's Move Layer Down action.

        The action works on the active node. Krita makes a node active only after the current
        event, and it also activates each node the plug-in just added, so the background is
        made active again until Krita reports it active, then moved.
        """
        node, background = moves[0]
        attempts = [0]

        def move_when_active() -> None:
            active = document.activeNode()
            if active is None or active.uniqueId() != background.uniqueId():
                attempts[0] += 1
                if attempts[0] < ACTIVATION_POLL_ATTEMPTS:
                    document.setActiveNode(background)
                    QTimer.singleShot(ACTIVATION_POLL_MS, move_when_active)
                    return
                logger.warning("layer %r did not become active; it stays above %r", background.name(), node.name())
            else:
                Krita.instance().action("move_layer_down").trigger()
                document.waitForDone()
            document.setActiveNode(node)
            if not is_below(node, background):
                self._finish(status, f"{summary} Move layer '{background.name()}' below '{node.name()}' in the "
                                     "Layers docker: Krita did not let the plug-in move it.", created)
            elif len(moves) > 1:
                self._move_backgrounds_down(document, moves[1:], created, summary, status)
            else:
                self._finish(status, summary, created)

        document.setActiveNode(background)
        QTimer.singleShot(ACTIVATION_POLL_MS, move_when_active)

    @staticmethod
    def _summary(requests: list[LayerRequest], options: Options) -> str:
        names = ", ".join(f"'{request.name}'" for request in requests)
        reply = requests[-1].reply if requests else {}
        seconds = sum(float(request.reply.get("seconds", 0.0)) for request in requests)
        engine = f"{reply.get('model', options.model)} on {reply.get('provider', 'the CPU')}, {seconds:.1f} s"
        if options.output == OUTPUT_SELECTION:
            return f"Selected the subject of {names} ({engine})."
        return f"Removed the background of {names} ({engine})."

    # ----------------------------------------------------------------- reporting
    def _finish(self, status: str, message: str, created: list[str] | None = None) -> None:
        self.run_count += 1
        self.last_outcome = {"run": self.run_count, "status": status, "message": message, "created": created or []}
        krita = Krita.instance()
        if status == FAILED:
            logger.error("%s", message)
        else:
            logger.info("%s", message)
        window = krita.activeWindow()
        if status == FAILED and not krita.batchmode():
            QMessageBox.warning(window.qwindow() if window is not None else None, MESSAGE_TITLE, message)
            return
        view = window.activeView() if window is not None else None
        if view is not None:
            view.showFloatingMessage(message, QIcon(), FLOATING_MESSAGE_MS, FLOATING_MESSAGE_PRIORITY)
