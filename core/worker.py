"""The editors' worker: a long-lived process that serves WORKER_PROTOCOL.md on stdin and stdout.

Run as `python -m ai_remove_background.worker`. Model sessions stay loaded between requests.
stdout carries frames only; the log goes to stderr.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, BinaryIO

import numpy as np

from . import __version__
from .catalogue import default_model_name, installed_model_names
from .composite import estimate_foreground
from .errors import UserError
from .imageio import DEFAULT_MAX_MEGAPIXELS, check_size, pixels_from_buffer
from .pipeline import MAX_THREADS, Options, remove_background
from .session import available_providers
from .worker_client import SAMPLE_BYTES, EndOfStream, encode_frame, read_frame

log = logging.getLogger("ai_remove_background.worker")

PLANE_NAMES = ("hint", "limit")
# The environment variable that sets the largest layer served, in megapixels. Editors set it
# through the "environment" object of their plug-in's engine.json.
MAX_MEGAPIXELS_VARIABLE = "AI_REMOVE_BACKGROUND_MAX_MEGAPIXELS"
OUTPUT_NAMES = {"mask", "foreground"}
# Upper bound of the threads option and of the CLI's --threads. It catches a mistyped value
# such as 100000, for which onnxruntime would try to start that many threads.
KNOWN_OPTIONS = {"model", "combine", "refine", "threshold", "grow", "feather", "invert", "outputs", "threads"}


class ProtocolError(Exception):
    """The byte stream is broken: the worker replies once, then exits."""


def _positive_int(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"invalid {key} {value!r}: expected a whole number of at least 1")
    return value


def _bool_option(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise UserError(f"invalid option {key} {value!r}: expected true or false")
    return value


def _number_option(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"invalid option {key} {value!r}: expected a finite number")
    return float(value)


def _whole_option(raw: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"invalid option {key} {value!r}: expected a whole number from {low} to {high}, or null")
    return value


def parse_options(raw: Any) -> tuple[Options, list[str]]:
    """Check the request's options object, value types included; return the options and the outputs."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"invalid options {raw!r}: expected a JSON object")
    unknown = set(raw) - KNOWN_OPTIONS
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}: expected some of {', '.join(sorted(KNOWN_OPTIONS))}")
    outputs = raw.get("outputs", ["mask"])
    if (not isinstance(outputs, list) or not all(isinstance(name, str) for name in outputs)
            or not set(outputs) <= OUTPUT_NAMES or "mask" not in outputs):
        raise UserError(f"invalid outputs {outputs!r}: expected [\"mask\"] or [\"mask\", \"foreground\"]")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError(f"invalid option model {model!r}: expected a model name or null")
    options = Options(
        model=model,
        refine=_bool_option(raw, "refine", True),
        combine=_bool_option(raw, "combine", True),
        threshold=_whole_option(raw, "threshold", 0, 255),
        grow=_number_option(raw, "grow", 0.0),
        feather=_number_option(raw, "feather", 0.0),
        invert=_bool_option(raw, "invert", False),
        threads=_whole_option(raw, "threads", 0, MAX_THREADS),
    )
    options.validate()
    return options, outputs


class Worker:
    def __init__(
        self, output: BinaryIO, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, setting_error: UserError | None = None
    ) -> None:
        self.output = output
        self.max_megapixels = max_megapixels
        self.setting_error = setting_error
        # The largest request allowed: four f32 channels and every extra plane at the pixel limit.
        max_pixels = int(max_megapixels * 1e6)
        self.max_payload_bytes = max_pixels * (4 * SAMPLE_BYTES["f32"] + len(PLANE_NAMES))

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.output.write(encode_frame(header, payload))
        self.output.flush()

    def handle(self, header: dict[str, Any], payload: bytes) -> bool:
        """Serve one request; return False when the worker should exit."""
        operation = header.get("op")
        request_id = header.get("id")
        if operation == "ping":
            self.send({"type": "pong", "id": request_id, "version": __version__, "models": installed_model_names(),
                       "default_model": default_model_name(), "providers": available_providers()})
            return True
        if operation == "shutdown":
            self.send({"type": "bye", "id": request_id})
            return False
        if operation != "remove_background":
            raise UserError(f"unknown op {operation!r}: expected ping, shutdown or remove_background")
        if self.setting_error is not None:
            raise self.setting_error
        self.remove_background(header, payload)
        return True

    def remove_background(self, header: dict[str, Any], payload: bytes) -> None:
        request_id = header.get("id")
        width = _positive_int(header, "width")
        height = _positive_int(header, "height")
        check_size(width, height, self.max_megapixels, "layer",
                   f"with {MAX_MEGAPIXELS_VARIABLE} in the environment of the plug-in's engine.json")
        channels = header.get("channels")
        sample = header.get("sample")
        if not isinstance(sample, str) or sample not in SAMPLE_BYTES:
            raise UserError(f"invalid sample {sample!r}: expected u8, u16 or f32")
        planes = header.get("planes", [])
        if (not isinstance(planes, list) or not all(isinstance(name, str) for name in planes)
                or len(set(planes)) != len(planes) or not set(planes) <= set(PLANE_NAMES)):
            raise UserError(f"invalid planes {planes!r}: expected a list of distinct names from {PLANE_NAMES}")
        options, outputs = parse_options(header.get("options"))
        if not isinstance(channels, int) or channels not in (1, 2, 3, 4):
            raise UserError(f"invalid channels {channels!r}: expected 1, 2, 3 or 4")

        pixel_bytes = width * height * channels * SAMPLE_BYTES[sample]
        expected = pixel_bytes + width * height * len(planes)
        if len(payload) != expected:
            raise UserError(f"payload has {len(payload)} bytes, expected {expected}")
        rgb, alpha = pixels_from_buffer(payload[:pixel_bytes], width, height, channels, sample)
        extra = {}
        offset = pixel_bytes
        for name in planes:
            extra[name] = np.frombuffer(payload[offset:offset + width * height], dtype=np.uint8).reshape(height, width)
            offset += width * height

        def progress(fraction: float, stage: str) -> None:
            self.send({"type": "progress", "id": request_id, "fraction": round(fraction, 3), "stage": stage})

        result = remove_background(rgb, alpha, options, limit=extra.get("limit"), hint=extra.get("hint"),
                                   progress=progress)
        reply_payload = result.mask.tobytes()
        if "foreground" in outputs:
            reply_payload += estimate_foreground(rgb, result.mask).tobytes()
        self.send({"type": "result", "id": request_id, "width": width, "height": height, "model": result.model,
                   "provider": result.provider, "seconds": round(result.seconds, 3), "outputs": outputs},
                  reply_payload)


def max_megapixels_from_environment(environment: dict[str, str]) -> float:
    """Return the layer size limit that MAX_MEGAPIXELS_VARIABLE sets, or the default.

    Raises UserError when the variable is set but is not a positive number.
    """
    text = environment.get(MAX_MEGAPIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_MEGAPIXELS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(
            f"{MAX_MEGAPIXELS_VARIABLE}={text!r} is not a positive number of megapixels: "
            f"set it to a number such as {DEFAULT_MAX_MEGAPIXELS:g} in engine.json, or remove it"
        )
    return value


def serve(input_stream: BinaryIO, output_stream: BinaryIO, environment: dict[str, str] | None = None) -> int:
    """Serve requests until shutdown, end of input or a broken frame; return the exit status.

    A bad setting in `environment` does not stop the worker: each remove_background request
    gets it as its error reply, which the editor shows.
    """
    setting_error = None
    try:
        max_megapixels = max_megapixels_from_environment(environment or {})
    except UserError as error:
        setting_error, max_megapixels = error, DEFAULT_MAX_MEGAPIXELS
        log.error("%s", error)
    worker = Worker(output_stream, max_megapixels, setting_error)
    log.info("worker %s started; layers up to %g megapixels", __version__, max_megapixels)
    while True:
        try:
            header, payload = read_frame(input_stream, worker.max_payload_bytes)
        except EndOfStream:
            log.info("input closed; worker exits")
            return 0
        except EOFError as error:
            log.warning("truncated frame (%s); worker exits", error)
            worker.send({"type": "error", "id": None, "code": "protocol", "message": f"truncated frame: {error}"})
            return 1
        except (ValueError, UnicodeDecodeError) as error:
            log.warning("malformed frame (%s); worker exits", error)
            worker.send({"type": "error", "id": None, "code": "protocol", "message": f"malformed frame: {error}"})
            return 1

        started = time.perf_counter()
        try:
            if not worker.handle(header, payload):
                return 0
        except UserError as error:
            log.info("request %r rejected: %s", header.get("id"), error)
            worker.send({"type": "error", "id": header.get("id"), "code": error.code, "message": str(error)})
        except MemoryError:
            worker.send({"type": "error", "id": header.get("id"), "code": "too_large",
                         "message": "not enough memory for this layer: scale it down or close other programs"})
        except Exception as error:  # a bug: keep serving, log the traceback for the maintainer
            log.exception("request %r failed", header.get("id"))
            worker.send({"type": "error", "id": header.get("id"), "code": "internal",
                         "message": f"internal error in the engine ({type(error).__name__}: {error}); "
                                    "please report it with the editor's error console output"})
        log.debug("request %r served in %.3f s", header.get("id"), time.perf_counter() - started)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return serve(sys.stdin.buffer, sys.stdout.buffer, dict(os.environ))
    except BrokenPipeError:
        log.info("output closed by the client; worker exits")
        return 1


if __name__ == "__main__":
    sys.exit(main())
