"""Measurements that must run in a fresh process, started by the speed benchmark.

`floor` times session.run alone on prepared input tensors, for one model or a model and its
partner, which the engine runs together. `profile` runs the command line in this process and
reports the time spent in each function of the engine, onnxruntime and Pillow.

  python -m benchmarks.speed_child floor --model M --input FEEDS.npy [--model M2 --input F2.npy] ...
  python -m benchmarks.speed_child profile --image FILE --runs N -- CLI ARGUMENTS...

Both print one JSON object on stdout. The parent reads this process's peak memory (ru_maxrss)
when it exits, so the floor process loads nothing but the models and their inputs.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

PACKAGE = "ai_remove_background"


def measure_floor(models: list[str], inputs: list[Path], runs: int, warmup: int) -> dict[str, object]:
    """Load the models, then time `runs` rounds of session.run (one call per model) after `warmup` rounds."""
    from ai_remove_background.catalogue import get_model
    from ai_remove_background.session import load_model

    calls: list[tuple[str, Any, str, dict[str, np.ndarray]]] = []
    load_seconds = {}
    provider = ""
    for model, input_path in zip(models, inputs):
        spec = get_model(model)
        started = time.perf_counter()
        loaded = load_model(spec)
        load_seconds[model] = time.perf_counter() - started
        provider = loaded.provider
        tensor = np.load(input_path)
        feeds: dict[str, np.ndarray] = {spec.input.name: tensor}
        for name in spec.input.recurrent_inputs:
            feeds[name] = np.zeros((1, 1, 1, 1), dtype=np.float32)
        if spec.input.downsample_ratio_input:
            ratio = min(1.0, spec.input.downsample_long_side / max(tensor.shape[2:]))
            feeds[spec.input.downsample_ratio_input] = np.asarray([ratio], dtype=np.float32)
        output_name = spec.output.name or loaded.output_names[spec.output.index]
        calls.append((model, loaded.session, output_name, feeds))

    for _ in range(warmup):
        for _, session, output_name, feeds in calls:
            session.run([output_name], feeds)
    per_model: dict[str, list[float]] = {model: [] for model in models}
    totals = []
    for _ in range(runs):
        total = 0.0
        for model, session, output_name, feeds in calls:
            started = time.perf_counter()
            session.run([output_name], feeds)
            elapsed = time.perf_counter() - started
            per_model[model].append(elapsed)
            total += elapsed
        totals.append(total)
    return {"run_seconds": totals, "per_model_seconds": per_model, "load_seconds": load_seconds,
            "provider": provider}


class StageTimer:
    """Wraps functions and records each one's self time: its own time minus that of wrapped callees."""

    def __init__(self) -> None:
        self.self_seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[float] = []  # time spent in wrapped callees, per active frame
        self._wrapped: dict[int, Callable[..., Any]] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        if id(function) in self._wrapped:
            return self._wrapped[id(function)]

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                in_callees = self._stack.pop()
                self.self_seconds[name] = self.self_seconds.get(name, 0.0) + elapsed - in_callees
                self.calls[name] = self.calls.get(name, 0) + 1
                if self._stack:
                    self._stack[-1] += elapsed

        self._wrapped[id(function)] = timed
        self._wrapped[id(timed)] = timed
        return timed

    def reset(self) -> None:
        self.self_seconds.clear()
        self.calls.clear()


def instrument(timer: StageTimer) -> None:
    """Wrap every function of the engine's modules, and the onnxruntime and Pillow calls it makes.

    Each module's global name is replaced, so calls through `from .x import f` are caught too.
    Methods of the engine's classes are not wrapped; their time counts for their caller.
    """
    import onnxruntime
    from PIL import Image, ImageFile

    external = [
        (onnxruntime.InferenceSession, "run", "onnxruntime InferenceSession.run"),
        (onnxruntime.InferenceSession, "__init__", "onnxruntime InferenceSession creation"),
        (ImageFile.ImageFile, "load", "Pillow decode (ImageFile.load)"),
        (Image.Image, "save", "Pillow encode (Image.save)"),
        (Image.Image, "resize", "Pillow Image.resize"),
        (Image.Image, "convert", "Pillow Image.convert"),
    ]
    for owner, attribute, name in external:
        setattr(owner, attribute, timer.wrap(name, getattr(owner, attribute)))

    modules = [module for name, module in sorted(sys.modules.items())
               if module is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))]
    for module in modules:
        for attribute, value in list(vars(module).items()):
            defined_here = getattr(value, "__module__", "") or ""
            if (callable(value) and not isinstance(value, type) and hasattr(value, "__code__")
                    and defined_here.startswith(PACKAGE)):
                name = f"{defined_here.removeprefix(PACKAGE + '.')}.{value.__qualname__}"
                setattr(module, attribute, timer.wrap(name, value))


def clear_engine_caches() -> bool:
    """Forget loaded sessions and verified files, as a new CLI process would; False if not possible."""
    from ai_remove_background import catalogue, session

    sessions = getattr(session, "_sessions", None)
    verified = getattr(catalogue, "_verified", None)
    if not isinstance(sessions, dict) or not isinstance(verified, set):
        return False
    sessions.clear()
    verified.clear()
    return True


def profile_cli(arguments: list[str], runs: int) -> dict[str, object]:
    """Run the CLI's main() in this process `runs` times after a warm-up; return median self time per stage."""
    import importlib
    import logging
    import pkgutil

    import ai_remove_background

    # Import every engine module first so that all of them get instrumented.
    for module_info in pkgutil.iter_modules(ai_remove_background.__path__):
        if module_info.name not in ("worker", "__main__"):
            importlib.import_module(f"{PACKAGE}.{module_info.name}")
    from ai_remove_background import cli

    logging.disable(logging.WARNING)
    timer = StageTimer()
    instrument(timer)
    stage_runs: dict[str, list[float]] = {}
    totals = []
    fresh_model_load = True
    for run in range(runs + 1):
        fresh_model_load = clear_engine_caches() and fresh_model_load
        timer.reset()
        started = time.perf_counter()
        status = cli.main(arguments)
        elapsed = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"the CLI failed with exit status {status} on {arguments}")
        if run == 0:
            continue  # warm-up
        totals.append(elapsed)
        attributed = 0.0
        for name, seconds in timer.self_seconds.items():
            stage_runs.setdefault(name, []).append(seconds)
            attributed += seconds
        stage_runs.setdefault("(not in a wrapped function)", []).append(elapsed - attributed)
    medians = {name: float(np.median(values + [0.0] * (runs - len(values)))) for name, values in stage_runs.items()}
    return {"total_seconds": totals, "stages": medians, "calls": timer.calls, "fresh_model_load": fresh_model_load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_child")
    parser.add_argument("mode", choices=("floor", "profile"))
    parser.add_argument("--model", action="append", default=[], help="floor: a model (repeat for a partner)")
    parser.add_argument("--input", action="append", default=[], type=Path,
                        help="floor: the model's input tensor as .npy, one per --model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" belongs to the CLI, whose options argparse must not see.
    cli_arguments = argv[argv.index("--") + 1:] if "--" in argv else []
    own_arguments = argv[:argv.index("--")] if "--" in argv else argv
    arguments = parser.parse_args(own_arguments)
    if arguments.mode == "floor":
        if not arguments.model or len(arguments.model) != len(arguments.input):
            parser.error("floor needs one --input per --model")
        result = measure_floor(arguments.model, arguments.input, arguments.runs, arguments.warmup)
    else:
        if not cli_arguments:
            parser.error("profile needs the CLI's arguments after --")
        result = profile_cli(cli_arguments, arguments.runs)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
