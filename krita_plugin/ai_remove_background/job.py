"""Run worker requests on a Python thread while Krita's GUI stays responsive.

The thread only talks to the worker process; it never touches the Krita API. A QTimer on the
GUI thread polls the thread's state, drives the progress dialog and hands the results back.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from PyQt5.QtCore import QObject, Qt, QTimer
from PyQt5.QtWidgets import QProgressDialog, QWidget

from .layers import LayerRequest

POLL_INTERVAL_MS = 100
PROGRESS_STEPS = 1000
DONE = "done"
CANCELLED = "cancelled"
FAILED = "error"

logger = logging.getLogger("ai_remove_background")


def ignore_broken_pipes() -> Any:
    """Make writes to a dead worker raise BrokenPipeError instead of killing Krita.

    Krita starts its embedded Python without Python's usual SIGPIPE handling, so on Linux and
    macOS a write to a worker that was just killed (Cancel) or crashed would end Krita with
    SIGPIPE. Returns the handler to restore, or None when nothing was changed.
    """
    if not hasattr(signal, "SIGPIPE") or signal.getsignal(signal.SIGPIPE) != signal.SIG_DFL:
        return None
    try:
        return signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except ValueError:  # raised off Python's main thread, which is where Krita runs plug-ins
        logger.warning("could not ignore SIGPIPE: a worker crash during a request may end Krita")
        return None


class WorkerJob(QObject):
    """Remove the background of each request in turn, then call `on_finished(job)` once.

    The job stops at the first request that fails; the requests before it keep their `mask`
    and `reply`, the others have neither.
    """

    def __init__(
        self,
        client: Any,
        requests: list[LayerRequest],
        engine_options: dict[str, Any],
        parent_widget: QWidget | None,
        on_finished: Callable[[WorkerJob], None],
    ) -> None:
        super().__init__(parent_widget)
        self.client = client
        self.requests = requests
        self.engine_options = engine_options
        self.on_finished = on_finished
        self.status = ""
        self.error_code = ""
        self.error_message = ""
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._progress = (0, 0.0, "starting the engine")
        self._error: tuple[str, str] | None = None
        self._restore_sigpipe: Any = None
        self._thread = threading.Thread(target=self._run, name="ai-remove-background", daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self.dialog = QProgressDialog("Starting the engine...", "Cancel", 0, PROGRESS_STEPS, parent_widget)
        self.dialog.setWindowTitle("AI Remove Background")
        self.dialog.setWindowModality(Qt.WindowModal)
        self.dialog.setMinimumDuration(0)
        self.dialog.setAutoClose(False)
        self.dialog.setAutoReset(False)
        self.dialog.canceled.connect(self.cancel)

    def start(self) -> None:
        self._restore_sigpipe = ignore_broken_pipes()
        self.dialog.setValue(0)
        self.dialog.show()
        self._thread.start()
        self._timer.start()

    def is_running(self) -> bool:
        return self._thread.is_alive() or self._timer.isActive()

    def cancel(self) -> None:
        """Stop at once by killing the worker process. The next run starts a fresh one."""
        self._cancel.set()
        process = getattr(self.client, "process", None)
        if process is not None and process.poll() is None:
            # Only kill here: the job thread then reads end of file from the pipe and resets the client.
            process.kill()

    # ----------------------------------------------------------------- job thread
    def _run(self) -> None:
        from . import worker_client

        for index, request in enumerate(self.requests):
            if self._cancel.is_set():
                return

            def on_progress(fraction: float, stage: str, index: int = index) -> bool:
                with self._lock:
                    self._progress = (index, fraction, stage)
                return self._cancel.is_set()

            try:
                reply, mask = self.client.remove_background(
                    request.width,
                    request.height,
                    4,
                    request.sample,
                    request.pixels,
                    options=self.engine_options,
                    limit=request.limit,
                    hint=request.hint,
                    on_progress=on_progress,
                )
            except worker_client.WorkerError as error:
                with self._lock:
                    self._error = (error.code, f"layer '{request.name}': {error}")
                return
            except Exception as error:  # a bug, reported to the user instead of lost with the thread
                with self._lock:
                    self._error = ("internal", f"layer '{request.name}': {type(error).__name__}: {error}")
                return
            if len(mask) != request.width * request.height:
                message = (f"the engine returned {len(mask)} mask bytes for layer '{request.name}', "
                           f"expected {request.width * request.height}")
                with self._lock:
                    self._error = ("internal", message)
                return
            request.mask = mask
            request.reply = reply

    # ----------------------------------------------------------------- GUI thread
    def _poll(self) -> None:
        if self.dialog.wasCanceled() and not self._cancel.is_set():
            self.cancel()  # closing the dialog by Escape or its window button cancels too
        with self._lock:
            index, fraction, stage = self._progress
            error = self._error
        count = len(self.requests)
        if not self._cancel.is_set():
            name = self.requests[min(index, count - 1)].name
            position = f" ({index + 1} of {count})" if count > 1 else ""
            self.dialog.setLabelText(f"Removing the background of '{name}'{position}: {stage or 'working'}...")
            self.dialog.setValue(int(PROGRESS_STEPS * (index + max(0.0, min(fraction, 1.0))) / count))
        if self._thread.is_alive():
            return
        self._timer.stop()
        if self._restore_sigpipe is not None:
            signal.signal(signal.SIGPIPE, self._restore_sigpipe)
        self.dialog.hide()
        self.dialog.deleteLater()
        if self._cancel.is_set():
            self.status = CANCELLED
        elif error is not None:
            self.status = FAILED
            self.error_code, self.error_message = error
        else:
            self.status = DONE
        self.on_finished(self)
