"""Client side of the worker protocol, for the editor adapters.

Standard library only: this file runs inside GIMP's and Krita's own Pythons, which may lack
numpy and onnxruntime. The installer copies it into each plug-in folder. The protocol is
described in WORKER_PROTOCOL.md beside this file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from typing import Any, Callable

HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 1 << 20
READ_CHUNK_BYTES = 1 << 20
ENGINE_FILE_NAME = "engine.json"
WORKER_MODULE = "ai_remove_background.worker"
SAMPLE_BYTES = {"u8": 1, "u16": 2, "f32": 4}
# Seconds the worker may stay silent during a request before it counts as hung. The worker
# reports progress between stages. The longest silence measured was 7 s, refining a
# 100-megapixel layer on a 2-core x86-64 server, so this leaves room for far slower machines.
DEFAULT_TIMEOUT_SECONDS = 300.0
# How long stop() waits for the last log lines of a worker that has exited.
STDERR_DRAIN_SECONDS = 2.0


class WorkerError(Exception):
    """A failure the user can act on; `code` is the worker's error code or a client one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EndOfStream(EOFError):
    """The stream ended cleanly, at a frame boundary."""


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """Return one frame: header length, JSON header, payload."""
    header = dict(header)
    header["payload_bytes"] = len(payload)
    header_bytes = json.dumps(header).encode("utf-8")
    return HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + payload


def read_exact(stream: Any, size: int) -> bytes:
    """Read exactly `size` bytes, or raise EOFError if the stream ends first.

    Reads at most READ_CHUNK_BYTES at a time, so a header that claims a huge payload costs
    memory only for the bytes that actually arrive.
    """
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(min(remaining, READ_CHUNK_BYTES))
        if not chunk:
            raise EOFError(f"stream ended with {remaining} of {size} bytes missing")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: Any, max_payload_bytes: int | None = None) -> tuple[dict[str, Any], bytes]:
    """Read one frame; raise EOFError on end of stream and ValueError on a malformed frame.

    A stream that ends exactly between two frames raises EndOfStream, a subclass of EOFError.
    A payload larger than `max_payload_bytes` is malformed.
    """
    first = stream.read(HEADER_LENGTH.size)
    if not first:
        raise EndOfStream("stream ended between frames")
    length_bytes = first + read_exact(stream, HEADER_LENGTH.size - len(first))
    (header_length,) = HEADER_LENGTH.unpack(length_bytes)
    if header_length > MAX_HEADER_BYTES:
        raise ValueError(f"frame header of {header_length} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(read_exact(stream, header_length).decode("utf-8"))
    except RecursionError:
        raise ValueError("frame header nests JSON arrays or objects too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("frame header is not a JSON object")
    payload_bytes = header.get("payload_bytes", 0)
    if not isinstance(payload_bytes, int) or isinstance(payload_bytes, bool) or payload_bytes < 0:
        raise ValueError(f"invalid payload_bytes {payload_bytes!r}: expected a whole number of 0 or more")
    if max_payload_bytes is not None and payload_bytes > max_payload_bytes:
        raise ValueError(f"payload_bytes {payload_bytes} exceeds the maximum of {max_payload_bytes}")
    return header, read_exact(stream, payload_bytes)


def load_engine_config(plugin_dir: str) -> dict[str, Any]:
    """Read the engine.json that install.py wrote into the installed plug-in folder."""
    path = os.path.join(plugin_dir, ENGINE_FILE_NAME)
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError:
        raise WorkerError(
            "engine_missing",
            f"{path} not found: run 'python3 install.py' from the ai-remove-background checkout",
        ) from None
    except (OSError, ValueError) as error:
        raise WorkerError("engine_missing", f"cannot read {path} ({error}): run 'python3 install.py' again") from None
    python = config.get("python")
    if not isinstance(python, str) or not os.path.exists(python):
        raise WorkerError(
            "engine_missing",
            f"the engine's Python {python!r} named in {path} does not exist: run 'python3 install.py' again",
        )
    timeout = config.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise WorkerError(
            "engine_missing",
            f"timeout_seconds {timeout!r} in {path} is not a positive number of seconds: "
            f"set it to a number such as {DEFAULT_TIMEOUT_SECONDS:.0f}, or remove it",
        )
    return config


class WorkerClient:
    """A long-lived worker process; restarted on the next request after a crash or a cancel.

    A request fails with the code "timeout" when the worker sends nothing for `timeout_seconds`:
    the clock restarts with every progress reply, so a long request on a big layer is not cut
    short while the worker is still reporting.
    """

    def __init__(
        self,
        python: str,
        env: dict[str, str] | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        timeout_hint: str = "",
    ) -> None:
        self.python = python
        self.env = env
        self.timeout_seconds = timeout_seconds
        # What the timeout message suggests beyond trying again, e.g. where to raise the limit.
        self.timeout_hint = timeout_hint
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_tail: list[str] = []
        self._stderr_reader: threading.Thread | None = None

    @classmethod
    def from_plugin_dir(cls, plugin_dir: str) -> "WorkerClient":
        """Return a client for the engine that engine.json in `plugin_dir` names."""
        config = load_engine_config(plugin_dir)
        env = dict(os.environ)
        # The editors export their own PYTHONPATH and PYTHONHOME, which must not leak into the engine.
        for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(name, None)
        env.update({key: str(value) for key, value in config.get("environment", {}).items()})
        hint = f"for very large layers, raise timeout_seconds in {os.path.join(plugin_dir, ENGINE_FILE_NAME)}"
        return cls(config["python"], env, float(config.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)), hint)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        creation_flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                creationflags=creation_flags,
            )
        except OSError as error:
            raise WorkerError("engine_missing", f"cannot start the engine {self.python!r}: {error}") from None
        self.stderr_tail = []
        self._stderr_reader = threading.Thread(target=self._drain_stderr, args=(self.process,), daemon=True)
        self._stderr_reader.start()

    def _drain_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw_line in process.stderr:
            line = raw_line.decode("utf-8", "replace").rstrip()
            sys.stderr.write(f"[ai-remove-background worker] {line}\n")
            self.stderr_tail = (self.stderr_tail + [line])[-20:]

    def stop(self) -> None:
        """Kill the worker at once; used for cancel and after any fault."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None
        if self._stderr_reader is not None:
            # The worker's last log lines explain a crash, so let the reader reach their end.
            self._stderr_reader.join(timeout=STDERR_DRAIN_SECONDS)
            self._stderr_reader = None

    def close(self) -> None:
        """Ask the worker to exit, killing it if it does not within a few seconds."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None and self.process.stdin is not None:
                self.process.stdin.write(encode_frame({"op": "shutdown"}))
                self.process.stdin.close()
                self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.stop()

    def request(
        self,
        header: dict[str, Any],
        payload: bytes = b"",
        on_progress: Callable[[float, str], bool | None] | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request and return the final reply's header and payload.

        `on_progress(fraction, stage)` may return True to cancel: the worker is then killed and
        WorkerError("cancelled") raised. A worker error reply raises WorkerError with its code.
        """
        self.start()
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        watchdog = _SilenceWatchdog(process, self.timeout_seconds)
        try:
            process.stdin.write(encode_frame(header, payload))
            process.stdin.flush()
            while True:
                reply, reply_payload = read_frame(process.stdout)
                watchdog.heard()
                if reply.get("type") != "progress":
                    break
                if on_progress is not None and on_progress(float(reply.get("fraction", 0.0)), str(reply.get("stage", ""))):
                    self.stop()
                    raise WorkerError("cancelled", "cancelled")
        except (OSError, EOFError, ValueError) as error:
            self.stop()
            if watchdog.fired.is_set():
                advice = f"try again; {self.timeout_hint}" if self.timeout_hint else "try again"
                raise WorkerError(
                    "timeout",
                    f"the engine sent nothing for {self.timeout_seconds:g} s and was stopped: {advice}",
                ) from None
            detail = self.stderr_tail[-1] if self.stderr_tail else str(error)
            raise WorkerError("worker_crashed", f"the engine stopped unexpectedly ({detail}); try again") from None
        finally:
            watchdog.cancel()
        if reply.get("type") == "error":
            if reply.get("code") == "protocol":
                self.stop()
            raise WorkerError(str(reply.get("code", "internal")), str(reply.get("message", "unknown error")))
        return reply, reply_payload

    def remove_background(
        self,
        width: int,
        height: int,
        channels: int,
        sample: str,
        pixels: bytes,
        options: dict[str, Any] | None = None,
        limit: bytes | None = None,
        hint: bytes | None = None,
        on_progress: Callable[[float, str], bool | None] | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Return (reply header, mask bytes of width * height) for one layer's pixels."""
        expected = width * height * channels * SAMPLE_BYTES[sample]
        if len(pixels) != expected:
            raise ValueError(f"pixel buffer has {len(pixels)} bytes, expected {expected}")
        planes = []
        payload = [pixels]
        for name, plane in (("hint", hint), ("limit", limit)):
            if plane is not None:
                if len(plane) != width * height:
                    raise ValueError(f"{name} plane has {len(plane)} bytes, expected {width * height}")
                planes.append(name)
                payload.append(plane)
        header = {
            "op": "remove_background",
            "id": 1,
            "width": width,
            "height": height,
            "channels": channels,
            "sample": sample,
            "options": options or {},
            "planes": planes,
        }
        reply, reply_payload = self.request(header, b"".join(payload), on_progress)
        return reply, reply_payload[: width * height]


class _SilenceWatchdog:
    """Kill a process that sends nothing for `seconds`; `heard()` restarts the clock."""

    def __init__(self, process: subprocess.Popen[bytes], seconds: float) -> None:
        self.process = process
        self.seconds = seconds
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.heard()

    def heard(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        self.fired.set()
        self.process.kill()
