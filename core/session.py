"""One generic ONNX Runtime session, driven by the catalogue: normalise, run, post-process.

Sessions are cached per process and per (model, thread count), so the worker and a CLI run over
a folder load each model once. The execution provider is the best one installed, and the log
names the one that actually ran.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .catalogue import ModelSpec, verified_model_path
from .errors import ModelInvalidError

log = logging.getLogger(__name__)

# Preferred execution providers, best first; the CPU is always available.
PREFERRED_PROVIDERS = (
    "CUDAExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
THREADS_VARIABLE = "AI_REMOVE_BACKGROUND_THREADS"


@dataclass
class LoadedModel:
    spec: ModelSpec
    session: object  # onnxruntime.InferenceSession
    provider: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


_sessions: dict[tuple[str, int], LoadedModel] = {}
_lock = threading.Lock()


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose_providers(available: list[str]) -> list[str]:
    """Return the preferred providers that are installed, best first, always ending with the CPU."""
    chosen = [name for name in PREFERRED_PROVIDERS if name in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def default_thread_count() -> int:
    """Threads for one inference: AI_REMOVE_BACKGROUND_THREADS, or 0 for onnxruntime's own choice."""
    value = os.environ.get(THREADS_VARIABLE, "0")
    try:
        return max(0, int(value))
    except ValueError:
        log.warning("ignoring %s=%r: expected a whole number of threads", THREADS_VARIABLE, value)
        return 0


def load_model(spec: ModelSpec, threads: int | None = None) -> LoadedModel:
    """Return the cached session for `spec`, creating it on first use."""
    thread_count = default_thread_count() if threads is None else threads
    key = (spec.name, thread_count)
    with _lock:
        cached = _sessions.get(key)
        if cached is not None:
            return cached
        path = verified_model_path(spec)

        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = thread_count
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(available_providers())
        try:
            session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors for a bad file
            raise ModelInvalidError(
                f"model file {path} could not be loaded ({str(error).splitlines()[0]}): delete it and run "
                f"'python3 install.py --models {spec.name}'"
            ) from None
        provider = session.get_providers()[0]
        if provider != providers[0]:
            log.warning("model %s: %s was requested but %s runs", spec.name, providers[0], provider)
        log.info("model %s loaded from %s; execution provider %s", spec.name, path, provider)
        loaded = LoadedModel(
            spec=spec,
            session=session,
            provider=provider,
            input_names=tuple(item.name for item in session.get_inputs()),
            output_names=tuple(item.name for item in session.get_outputs()),
        )
        _sessions[key] = loaded
        return loaded


def model_input_size(spec: ModelSpec, width: int, height: int) -> tuple[int, int]:
    """Return the (width, height) of the model input for an image of the given size."""
    model_input = spec.input
    if model_input.resize == "fixed":
        return model_input.width, model_input.height
    long_side = max(width, height)
    scale = min(1.0, model_input.max_long_side / long_side) if model_input.max_long_side else 1.0
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalise(spec: ModelSpec, rgb: np.ndarray) -> np.ndarray:
    """Resize an RGB uint8 image for the model and return its NCHW float32 tensor."""
    height, width = rgb.shape[:2]
    target = model_input_size(spec, width, height)
    if target != (width, height):
        resized = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.BILINEAR))
    else:
        resized = rgb
    pixels = resized.astype(np.float32)
    if spec.input.colour_order == "BGR":
        pixels = pixels[:, :, ::-1]
    divisor = spec.input.divisor
    if divisor == "image_max":
        divisor = max(float(pixels.max()), 1e-6)
    pixels /= float(divisor)
    pixels -= np.asarray(spec.input.mean, dtype=np.float32)
    pixels /= np.asarray(spec.input.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])


def postprocess(spec: ModelSpec, output: np.ndarray) -> np.ndarray:
    """Turn the raw output into a 2-D float32 foreground probability in 0..1."""
    probability = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
    method = spec.output.postprocess
    if method == "sigmoid":
        probability = 1.0 / (1.0 + np.exp(-probability))
    elif method == "minmax":
        low, high = float(probability.min()), float(probability.max())
        probability = (probability - low) / max(high - low, 1e-6)
    elif method != "clamp":
        raise ValueError(f"unknown postprocess {method!r} in the catalogue entry of {spec.name}")
    return np.clip(probability, 0.0, 1.0)


def predict(loaded: LoadedModel, rgb: np.ndarray) -> np.ndarray:
    """Run the model on an RGB uint8 image; return its probability map at the model's resolution."""
    spec = loaded.spec
    feeds: dict[str, np.ndarray] = {spec.input.name: normalise(spec, rgb)}
    for name in spec.input.recurrent_inputs:
        feeds[name] = np.zeros((1, 1, 1, 1), dtype=np.float32)
    if spec.input.downsample_ratio_input:
        height, width = feeds[spec.input.name].shape[2:]
        ratio = min(1.0, spec.input.downsample_long_side / max(height, width))
        feeds[spec.input.downsample_ratio_input] = np.asarray([ratio], dtype=np.float32)

    output_name = spec.output.name or loaded.output_names[spec.output.index]
    if output_name not in loaded.output_names:
        raise ModelInvalidError(f"model {spec.name} has no output {output_name!r}; its file does not match the catalogue")
    (output,) = loaded.session.run([output_name], feeds)
    return postprocess(spec, output)
