"""Speed benchmark: the engine's command line and worker against the inference floor and rembg.

Each model is measured on a generated 12-megapixel JPEG and a 1-megapixel PNG, four ways:
  inference floor    session.run alone, in a process that loads only the models and their inputs
  CLI end-to-end     a new `ai-remove-background IN -o OUT` process per run
  worker round trip  one request to a warm worker (session loaded once) through WorkerClient
  rembg CLI          `rembg i -m MODEL IN OUT` with the same weights, when rembg is installed
When the engine combines a model with a partner model, the floor includes both models.
Times are medians after warm-up runs, and peak memory is each process's own peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ai_remove_background.catalogue import default_model_name, get_model, installed_model_names
from ai_remove_background.pipeline import Options
from ai_remove_background.session import normalise
from ai_remove_background.worker_client import WorkerClient

from . import machine, rembg_env, tables

CHECKOUT = Path(__file__).resolve().parent.parent
SAMPLE_PHOTO = CHECKOUT / "samples" / "astronaut.jpg"
TIMED_RUN = Path(__file__).resolve().with_name("timed_run.py")
PAGE_SECTION = "speed"
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
JPEG_QUALITY = 90
NOISE_SIGMA = 4.0  # grey levels; gives the generated photos a real photo's entropy
MIB = 1024 * 1024
# Targets, checked against the measurements and reported, never asserted.
CLI_OVERHEAD_TARGET_SECONDS = 0.35
REMBG_SPEEDUP_TARGET = 2.0
WORKER_OVERHEAD_TARGET_SECONDS = 0.5
MEMORY_IMAGE_COPIES = 4


@dataclass(frozen=True)
class TestImage:
    name: str
    path: Path
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def rgba_bytes(self) -> int:
        return self.width * self.height * 4


@dataclass
class Measurement:
    seconds: list[float]
    peak_rss_bytes: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def generate_images(folder: Path) -> list[TestImage]:
    """Write a 4000 x 3000 JPEG and a 1155 x 866 PNG: the sample photo upscaled, with noise."""
    rng = np.random.default_rng(0)
    with Image.open(SAMPLE_PHOTO) as sample:
        source = sample.convert("RGB")
    images = []
    for name, width, height, suffix in (("12 MP JPEG", 4000, 3000, ".jpg"), ("1 MP PNG", 1155, 866, ".png")):
        upscaled = np.asarray(source.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        upscaled += rng.normal(0.0, NOISE_SIGMA, upscaled.shape).astype(np.float32)
        pixels = np.clip(np.rint(upscaled), 0, 255).astype(np.uint8)
        path = folder / f"photo-{width}x{height}{suffix}"
        options = {"quality": JPEG_QUALITY} if suffix == ".jpg" else {}
        Image.fromarray(pixels).save(path, **options)
        images.append(TestImage(name, path, width, height))
    return images


def run_child(command: list[str], environment: dict[str, str] | None = None,
              cwd: Path | None = None) -> tuple[float, int, str]:
    """Run a process to its end; return (wall seconds, peak RSS in bytes, stdout). Raise if it fails.

    The process is started by timed_run.py, so its peak RSS is its own (see there); its stderr
    is kept for the error message.
    """
    with tempfile.NamedTemporaryFile(suffix=".out") as output, tempfile.TemporaryFile() as errors:
        request = json.dumps({"command": command, "stdout": output.name})
        launcher = subprocess.run([sys.executable, "-I", str(TIMED_RUN), request], stdout=subprocess.PIPE,
                                  stderr=errors, env=environment, cwd=cwd, check=False)
        errors.seek(0)
        error_text = errors.read().decode("utf-8", "replace").strip()[-2000:]
        if launcher.returncode != 0:
            raise RuntimeError(f"the launcher {TIMED_RUN} failed with exit status {launcher.returncode}: {error_text}")
        report = json.loads(launcher.stdout)
        if report["exit_status"] != 0:
            raise RuntimeError(f"{' '.join(command)} failed with exit status {report['exit_status']}: {error_text}")
        stdout = Path(output.name).read_text(encoding="utf-8", errors="replace")
    return float(report["seconds"]), int(report["peak_rss_bytes"]), stdout


def repeat_child(command: list[str], runs: int, warmup: int, environment: dict[str, str] | None = None,
                 cwd: Path | None = None) -> Measurement:
    for _ in range(warmup):
        run_child(command, environment, cwd)
    seconds = []
    peak = 0
    for _ in range(runs):
        elapsed, rss, _ = run_child(command, environment, cwd)
        seconds.append(elapsed)
        peak = max(peak, rss)
    return Measurement(seconds, peak)


def engine_python() -> Path:
    return Path(sys.executable)


def partner_of(model: str) -> str | None:
    """Return the installed model that the engine runs together with `model` by default, or None."""
    partner = getattr(get_model(model), "combine_with", None)
    combines = "combine" in {item.name for item in dataclasses.fields(Options)} and Options().combine
    if partner is None or not combines or partner not in installed_model_names():
        return None
    return partner


def measure_working_set(model: str, image: TestImage, scratch: Path) -> int:
    """Return the peak RSS of a process that loads the models and runs one inference: their working set.

    One inference, as a CLI process does: onnxruntime's memory arena can grow further over
    repeated runs, so the floor's own process is not used for this.
    """
    return measure_floor(model, image, scratch, runs=1, warmup=0).peak_rss_bytes or 0


def measure_floor(model: str, image: TestImage, scratch: Path, runs: int, warmup: int) -> Measurement:
    """Time session.run alone on the inputs that the engine makes of this photo.

    When the engine combines `model` with a partner model, the floor is both models' session.run.
    """
    with Image.open(image.path) as photo:
        rgb = np.asarray(photo.convert("RGB"))
    command = [str(engine_python()), "-m", "benchmarks.speed_child", "floor", "--runs", str(runs),
               "--warmup", str(warmup)]
    for name in filter(None, (model, partner_of(model))):
        tensor_path = scratch / f"input-{name}-{image.width}x{image.height}.npy"
        np.save(tensor_path, normalise(get_model(name), rgb))
        command += ["--model", name, "--input", str(tensor_path)]
    del rgb
    _, peak, stdout = run_child(command, cwd=CHECKOUT)
    report = json.loads(stdout)
    return Measurement(report["run_seconds"], peak, {"load_seconds": report["load_seconds"],
                                                     "per_model_seconds": report["per_model_seconds"],
                                                     "provider": report["provider"]})


def measure_cli(model: str, image: TestImage, scratch: Path, runs: int, warmup: int) -> Measurement:
    program = engine_python().parent / "ai-remove-background"
    if not program.exists():
        raise FileNotFoundError(f"{program} not found: run 'python3 install.py --dev --no-editors' first")
    target = scratch / f"cli-{model}-{image.width}x{image.height}.png"
    command = [str(program), str(image.path), "-o", str(target), "--overwrite", "--model", model]
    return repeat_child(command, runs, warmup)


def peak_rss_of(pid: int) -> int | None:
    """Return the peak resident set size (VmHWM) of a running process, in bytes, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure_worker(model: str, image: TestImage, runs: int, warmup: int) -> Measurement:
    """Time remove_background requests to one warm worker with the photo as an opaque RGBA layer."""
    with Image.open(image.path) as photo:
        pixels = photo.convert("RGBA").tobytes()
    client = WorkerClient(str(engine_python()), env=dict(os.environ))
    try:
        client.request({"op": "ping"})
        options = {"model": model}
        for _ in range(max(1, warmup)):
            client.remove_background(image.width, image.height, 4, "u8", pixels, options)
        seconds = []
        engine_seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            reply, mask = client.remove_background(image.width, image.height, 4, "u8", pixels, options)
            seconds.append(time.perf_counter() - started)
            engine_seconds.append(float(reply["seconds"]))
            if len(mask) != image.width * image.height:
                raise RuntimeError(f"the worker returned {len(mask)} mask bytes, expected {image.width * image.height}")
        assert client.process is not None
        peak = peak_rss_of(client.process.pid)
    finally:
        client.close()
    return Measurement(seconds, peak, {"engine_seconds_median": statistics.median(engine_seconds)})


def measure_rembg_cli(environment: rembg_env.RembgEnvironment, model: str, image: TestImage, scratch: Path,
                      runs: int, warmup: int) -> Measurement:
    target = scratch / f"rembg-{model}-{image.width}x{image.height}.png"
    command = environment.runner_command("cli", "i", "-m", environment.models[model], str(image.path), str(target))
    return repeat_child(command, runs, warmup, environment.variables())


def measure_startup(runs: int) -> Measurement:
    """Time `ai-remove-background --version`: interpreter start and the CLI's imports."""
    program = engine_python().parent / "ai-remove-background"
    return repeat_child([str(program), "--version"], runs, 1)


def measure_rembg_startup(environment: rembg_env.RembgEnvironment, runs: int) -> Measurement:
    """Time `rembg --help` (through the offline runner): interpreter start and rembg's CLI imports."""
    return repeat_child(environment.runner_command("cli", "--help"), runs, 1, environment.variables())


def profile(model: str, image: TestImage, scratch: Path, runs: int) -> dict[str, object]:
    """Run the CLI in one instrumented process; return its median self time per function."""
    target = scratch / f"profile-{model}-{image.width}x{image.height}.png"
    command = [str(engine_python()), "-m", "benchmarks.speed_child", "profile", "--runs", str(runs), "--",
               str(image.path), "-o", str(target), "--overwrite", "--model", model]
    _, _, stdout = run_child(command, cwd=CHECKOUT)
    return json.loads(stdout)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def target_rows(results: dict[str, dict[str, dict[str, object]]], images: list[TestImage]) -> list[list[str]]:
    """Build one row per target and model: measured value, limit, and whether it is met."""
    rows = []
    large = images[0]
    for model, by_image in results.items():
        entry = by_image[large.name]
        floor: Measurement = entry["floor"]  # type: ignore[assignment]
        cli: Measurement | None = entry.get("cli")  # type: ignore[assignment]
        worker: Measurement | None = entry.get("worker")  # type: ignore[assignment]
        rembg: Measurement | None = entry.get("rembg_cli")  # type: ignore[assignment]
        if cli is not None:
            overhead = cli.median - floor.median
            rows.append(_target_row(f"{model}: CLI − inference, {large.name}", overhead, CLI_OVERHEAD_TARGET_SECONDS,
                                    "s"))
            if rembg is not None:
                speedup = rembg.median / cli.median
                met = speedup >= REMBG_SPEEDUP_TARGET
                rows.append([f"{model}: rembg CLI ÷ our CLI, {large.name}", f"{speedup:.2f}×",
                             f"≥ {REMBG_SPEEDUP_TARGET:.1f}×", "yes" if met else
                             f"no: needs {rembg.median / REMBG_SPEEDUP_TARGET:.2f} s, is {cli.median:.2f} s"])
        if worker is not None:
            rows.append(_target_row(f"{model}: worker − inference, {large.name}", worker.median - floor.median,
                                    WORKER_OVERHEAD_TARGET_SECONDS, "s"))
        working_set = entry.get("working_set_bytes")
        for path_name, measurement in (("CLI", cli), ("worker", worker)):
            if measurement is None or measurement.peak_rss_bytes is None or not isinstance(working_set, int):
                continue
            limit = working_set + MEMORY_IMAGE_COPIES * large.rgba_bytes
            rows.append(_target_row(f"{model}: {path_name} peak memory, {large.name}",
                                    measurement.peak_rss_bytes / MIB, limit / MIB, "MiB"))
    return rows


def _target_row(name: str, measured: float, limit: float, unit: str) -> list[str]:
    digits = 0 if unit == "MiB" else 2
    met = measured <= limit
    verdict = "yes" if met else f"no: over by {measured - limit:.{digits}f} {unit}"
    return [name, f"{measured:.{digits}f} {unit}", f"≤ {limit:.{digits}f} {unit}", verdict]


PROFILE_MINIMUM_SECONDS = 0.01  # stages below this in every column are summed into one row


def floor_label(measurement: Measurement) -> str:
    models = measurement.extra.get("per_model_seconds", {})
    assert isinstance(models, dict)
    return f"inference floor (session.run: {' + '.join(models)})"


def working_sets_text(results: dict[str, dict[str, dict[str, object]]], image: TestImage) -> str:
    parts = []
    for model, by_image in results.items():
        entry = by_image[image.name]
        floor: Measurement = entry["floor"]  # type: ignore[assignment]
        models = " + ".join(floor.extra.get("per_model_seconds", {model: None}))  # type: ignore[arg-type]
        working_set = entry.get("working_set_bytes")
        parts.append(f"{models} {mib(working_set if isinstance(working_set, int) else None)} MiB")
    return ", ".join(parts)


def times_table(results: dict[str, dict[str, dict[str, object]]], images: list[TestImage]) -> str:
    rows = []
    for model, by_image in results.items():
        for image in images:
            entry = by_image[image.name]
            floor: Measurement = entry["floor"]  # type: ignore[assignment]
            for key, label in (("floor", floor_label(floor)), ("cli", "CLI end-to-end"),
                               ("worker", "worker round trip"), ("rembg_cli", "rembg CLI, same weights")):
                measurement: Measurement | None = entry.get(key)  # type: ignore[assignment]
                if measurement is None:
                    continue
                ratio = measurement.median / floor.median
                over = measurement.median - floor.median
                rows.append([model, image.name, label, f"{measurement.median:.2f}",
                             f"{min(measurement.seconds):.2f}–{max(measurement.seconds):.2f}",
                             f"{ratio:.2f}×", f"{over:+.2f}" if key != "floor" else "",
                             mib(measurement.peak_rss_bytes)])
    return tables.markdown_table(["model", "photo", "path", "median s", "range s", "× floor", "− floor s",
                                  "peak RSS MiB"], rows, text_columns=3)


def profile_table(profiles: dict[str, dict[str, dict[str, object]]]) -> str | None:
    """Tabulate the self time per function of an in-process CLI run, largest first."""
    columns = [(model, image_name) for model, by_image in profiles.items() for image_name in by_image]
    if not columns:
        return None
    stages = {column: profiles[column[0]][column[1]]["stages"] for column in columns}
    names = sorted({name for values in stages.values() for name in values},  # type: ignore[union-attr]
                   key=lambda name: -max(values.get(name, 0.0) for values in stages.values()))  # type: ignore[union-attr]
    shown = [name for name in names
             if max(values.get(name, 0.0) for values in stages.values()) >= PROFILE_MINIMUM_SECONDS]  # type: ignore[union-attr]
    rows = [[name, *(tables.number(stages[column].get(name, 0.0), 3) for column in columns)]  # type: ignore[union-attr]
            for name in shown]
    rest = [sum(value for name, value in stages[column].items() if name not in shown)  # type: ignore[union-attr]
            for column in columns]
    rows.append([f"all other stages (each < {PROFILE_MINIMUM_SECONDS} s)", *(tables.number(v, 3) for v in rest)])
    totals = [float(np.median(profiles[m][i]["total_seconds"])) for m, i in columns]  # type: ignore[arg-type]
    rows.append(["**total, CLI main() in-process**", *(f"**{value:.3f}**" for value in totals)])
    return tables.markdown_table(["function (self time, s)", *(f"{m}, {i}" for m, i in columns)], rows)


def report_markdown(document: dict[str, object], results: dict[str, dict[str, dict[str, object]]],
                    images: list[TestImage], profiles: dict[str, dict[str, dict[str, object]]],
                    startup: dict[str, Measurement]) -> str:
    info = document["machine"]
    assert isinstance(info, dict)
    lines = [
        f"Measured {info['date']} with `{document['command']}`: medians of {document['runs']} runs after "
        f"{document['warmup']} warm-up run(s); peak memory is the process's peak RSS (ru_maxrss or VmHWM).",
        f"Machine: {machine.describe_markdown(info)}.",
        f"Photos: {', '.join(f'{i.name} ({i.width} x {i.height})' for i in images)}, generated from "
        f"samples/astronaut.jpg (upscaled, Gaussian noise σ = {NOISE_SIGMA:g}).",
    ]
    notes = document.get("notes") or []
    assert isinstance(notes, list)
    lines += [f"- {note}" for note in notes]
    parts = ["\n".join(lines), "#### Times\n\n" + times_table(results, images)]

    parts.append("#### Targets\n\n" + tables.markdown_table(
        ["target", "measured", "limit", "met"], target_rows(results, images), text_columns=1) +
        f"\n\nMemory limit: the models' working set plus {MEMORY_IMAGE_COPIES} × the photo's RGBA size "
        f"({images[0].rgba_bytes / MIB:.0f} MiB for the {images[0].name}). The working set is the peak RSS of "
        f"a process that loads the models and runs one inference (Python and onnxruntime included): "
        f"{working_sets_text(results, images[0])}.")

    startup_rows = [[f"`{name}`", f"{measurement.median:.2f}", mib(measurement.peak_rss_bytes)]
                    for name, measurement in startup.items()]
    if startup_rows:
        parts.append("#### Start-up (interpreter and imports, no image)\n\n" + tables.markdown_table(
            ["command", "median s", "peak RSS MiB"], startup_rows))

    profile_text = profile_table(profiles)
    if profile_text is not None:
        parts.append("#### Where the time goes\n\nThe CLI's main() run in one process with every engine "
                     "function, onnxruntime's session calls and Pillow's decode, encode, resize and convert "
                     "wrapped by timers; each row is a function's own time without the wrapped functions it "
                     "calls (median per run). The model is loaded again in every run, as in a new "
                     "process; interpreter start-up and imports are not included (see above).\n\n" + profile_text)
    return "\n\n".join(parts) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every timing to FILE")
    parser.add_argument("--models", metavar="LIST",
                        help=f"comma-separated models (default: {default_model_name()} and u2netp)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                        help="timed runs per measurement, at least 5 for the page (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
                        help="untimed runs before each measurement (default: %(default)s)")
    parser.add_argument("--skip", metavar="LIST", default="",
                        help="comma-separated parts to leave out: cli, worker, rembg, profile, 1mp")
    parser.add_argument("--rembg-python", type=Path, metavar="PYTHON",
                        help=f"a Python that can import rembg (default: {rembg_env.DEFAULT_REMBG_VENV}/bin/python)")
    parser.add_argument("--page", type=Path, metavar="FILE",
                        help=f"replace the '{PAGE_SECTION}' section of FILE (e.g. BENCHMARKS.md) with the tables")


def progress(message: str) -> None:
    print(f"benchmarks: {message}", file=sys.stderr, flush=True)


def measurement_json(measurement: Measurement) -> dict[str, object]:
    return {"median_seconds": measurement.median, "seconds": measurement.seconds,
            "peak_rss_bytes": measurement.peak_rss_bytes, **measurement.extra}


def run(arguments: argparse.Namespace, command: str) -> int:
    skip = {part.strip() for part in arguments.skip.split(",") if part.strip()}
    unknown = skip - {"cli", "worker", "rembg", "profile", "1mp"}
    if unknown:
        raise SystemExit(f"benchmarks: invalid --skip {', '.join(sorted(unknown))}: "
                         "expected some of cli, worker, rembg, profile, 1mp")
    if arguments.runs < 1:
        raise SystemExit(f"benchmarks: invalid --runs {arguments.runs}: expected 1 or more")
    models = ([name.strip() for name in arguments.models.split(",") if name.strip()] if arguments.models
              else [default_model_name(), "u2netp"])
    missing = [model for model in models if model not in installed_model_names()]
    if missing:
        raise SystemExit(f"benchmarks: model(s) {', '.join(missing)} not installed: "
                         f"run 'python3 install.py --models {','.join(missing)}'")

    notes: list[str] = []
    environment = None
    if "rembg" not in skip:
        environment, rembg_status = rembg_env.prepare(arguments.rembg_python)
        notes.append(f"{rembg_status}.")
        if environment is not None:
            notes += environment.notes
    load_before = os.getloadavg()
    results: dict[str, dict[str, dict[str, object]]] = {}
    profiles: dict[str, dict[str, dict[str, object]]] = {}
    startup: dict[str, Measurement] = {}
    runs, warmup = arguments.runs, arguments.warmup
    try:
        with tempfile.TemporaryDirectory(prefix="benchmark-speed-") as scratch_name:
            scratch = Path(scratch_name)
            images = generate_images(scratch)
            if "1mp" in skip:
                images = images[:1]
            if "cli" not in skip:
                progress("start-up of the CLI")
                startup["ai-remove-background --version"] = measure_startup(runs)
            if environment is not None and environment.models:
                progress("start-up of rembg's CLI")
                startup["rembg --help"] = measure_rembg_startup(environment, runs)
            for model in models:
                results[model] = {}
                for image in images:
                    entry: dict[str, object] = {}
                    progress(f"{model}, {image.name}: inference floor")
                    entry["floor"] = measure_floor(model, image, scratch, runs, warmup)
                    if image is images[0]:
                        entry["working_set_bytes"] = measure_working_set(model, image, scratch)
                    if "cli" not in skip:
                        progress(f"{model}, {image.name}: CLI")
                        entry["cli"] = measure_cli(model, image, scratch, runs, warmup)
                    if "worker" not in skip:
                        progress(f"{model}, {image.name}: worker")
                        entry["worker"] = measure_worker(model, image, runs, warmup)
                    if environment is not None and model in environment.models:
                        progress(f"{model}, {image.name}: rembg CLI")
                        entry["rembg_cli"] = measure_rembg_cli(environment, model, image, scratch, runs, warmup)
                    if "profile" not in skip:
                        progress(f"{model}, {image.name}: profile")
                        profiles.setdefault(model, {})[image.name] = profile(model, image, scratch, runs)
                    results[model][image.name] = entry
    finally:
        if environment is not None:
            environment.cleanup()

    load_after = os.getloadavg()
    # Other processes on the machine share its cores and slow every path alike; the load
    # average before and after shows whether they did.
    notes.append(f"1-minute load average {load_before[0]:.2f} before the run and {load_after[0]:.2f} after it "
                 f"(the benchmark itself keeps about 2 cores busy).")
    document: dict[str, object] = {
        "command": command,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "machine": machine.describe(),
        "runs": runs,
        "warmup": warmup,
        "notes": notes,
        "images": [{"name": i.name, "width": i.width, "height": i.height} for i in images],
    }
    markdown = report_markdown(document, results, images, profiles, startup)
    print(markdown)
    if arguments.page is not None:
        tables.replace_section(arguments.page, PAGE_SECTION, markdown)
        progress(f"updated the {PAGE_SECTION} section of {arguments.page}")
    if arguments.json is not None:
        document["results"] = {model: {image: {key: measurement_json(value) if isinstance(value, Measurement) else value
                                               for key, value in entry.items()}
                                       for image, entry in by_image.items()} for model, by_image in results.items()}
        document["profiles"] = profiles
        document["startup"] = {name: measurement_json(value) for name, value in startup.items()}
        arguments.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        progress(f"wrote {arguments.json}")
    return 0
