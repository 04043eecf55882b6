"""Quality benchmark: run each configuration on an evaluation folder and score it against the truth.

Configurations:
  <model>-raw        the model alone, its mask resized bilinearly (refine=False, combine=False)
  <model>-refined    the model alone with the engine's refinement (refine=True, combine=False)
  <model>+<partner>-raw, -refined  the model combined with its catalogue partner (combine=True)
  default            Options(): what the command line and the editors do without options
  default-keep-enclosed  Options(clear_enclosed=False): the default without clearing enclosed background
  default-hint       Options() with the sample's trimap as the hint mask (hint mode); on samples
                     without a trimap this equals default
  rembg-<model>      rembg's cutout with the same weights, its alpha channel
  rembg-<model>-matting  the same with rembg's alpha matting (pymatting closed-form matting)
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ai_remove_background.catalogue import default_model_name, get_model, installed_model_names, model_names
from ai_remove_background.pipeline import Options, remove_background

from . import machine, metrics, rembg_env, tables
from .dataset import Sample, load_photo, load_trimap, load_truth, read_manifest
from .inference_cache import InferenceCache, default_cache_dir

PAGE_SECTION = "quality"
BINARY_COLUMNS = (("mae", "MAE ↓"), ("iou", "IoU ↑"), ("boundary_f", "boundary F ↑"), ("max_f", "maxF ↑"))
ALPHA_COLUMNS = (("mae", "MAE ↓"), ("sad", "SAD/1000 ↓"), ("mse", "MSE×1000 ↓"), ("grad", "grad/1000 ↓"),
                 ("band_mae", "band MAE ↓"))
DEFAULT_WORST_COUNT = 10
CURVE_KEYS = ("precision_curve", "recall_curve")


@dataclass(frozen=True)
class Config:
    name: str
    description: str
    options: tuple[tuple[str, object], ...] = ()  # keyword arguments of Options, for the engine
    model: str | None = None  # for rembg: the engine's name of the shared model
    rembg: bool = False
    alpha_matting: bool = False
    hint: bool = False  # pass the sample's trimap, when it has one, as the hint mask

    def build_options(self) -> Options:
        return Options(**dict(self.options))


def _option_names() -> set[str]:
    return {item.name for item in dataclasses.fields(Options)}


def engine_configs(models: Iterable[str]) -> list[Config]:
    """Return each model alone raw and refined, each model with its catalogue partner, and Options()."""
    installed = set(models)
    can_combine = "combine" in _option_names()
    alone: tuple[tuple[str, object], ...] = (("combine", False),) if can_combine else ()
    configs = []
    for model in models:
        configs.append(Config(f"{model}-raw", f"{model} alone, bilinear upsampling (refine=False)",
                              (("model", model), ("refine", False), *alone)))
        configs.append(Config(f"{model}-refined", f"{model} alone, the engine's refinement (refine=True)",
                              (("model", model), ("refine", True), *alone)))
        partner = getattr(get_model(model), "combine_with", None)
        if can_combine and partner in installed:
            pair = f"{model}+{partner}"
            configs.append(Config(f"{pair}-raw", f"{model} combined with {partner}, bilinear upsampling",
                                  (("model", model), ("refine", False), ("combine", True))))
            configs.append(Config(f"{pair}-refined", f"{model} combined with {partner}, the engine's refinement",
                                  (("model", model), ("refine", True), ("combine", True))))
    configs.append(Config("default", f"Options(): the defaults of the CLI and editors (model {default_model_name()})"))
    configs.append(Config("default-hint", "Options() with the sample's trimap as the hint mask (hint mode); "
                          "samples without a trimap get the default", hint=True))
    if "clear_enclosed" in _option_names():
        configs.append(Config("default-keep-enclosed", "Options(clear_enclosed=False): the default without "
                              "clearing enclosed background that only the partner model marks as subject",
                              (("clear_enclosed", False),)))
    return configs


def rembg_configs(models: Iterable[str], version: str) -> list[Config]:
    configs = []
    for model in models:
        configs.append(Config(f"rembg-{model}", f"rembg {version}, {model}, default settings", model=model,
                              rembg=True))
        configs.append(Config(f"rembg-{model}-matting", f"rembg {version}, {model}, alpha_matting=True",
                              model=model, rembg=True, alpha_matting=True))
    return configs


def select_configs(available: list[Config], patterns: str | None) -> list[Config]:
    """Return the configurations matching the comma-separated glob patterns, in the available order."""
    if not patterns:
        return available
    wanted = [pattern.strip() for pattern in patterns.split(",") if pattern.strip()]
    unmatched = [pattern for pattern in wanted if not any(fnmatch.fnmatchcase(c.name, pattern) for c in available)]
    if unmatched:
        raise SystemExit(f"benchmarks: --configs {', '.join(unmatched)} matches no available configuration; "
                         f"available: {', '.join(c.name for c in available)}")
    return [config for config in available if any(fnmatch.fnmatchcase(config.name, p) for p in wanted)]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_rembg_masks(config: Config, environment: rembg_env.RembgEnvironment, samples: list[Sample],
                        folder: Path) -> dict[str, Path]:
    """Run rembg on the samples whose mask is not in `folder` yet; return the mask path per sample key."""
    assert config.model is not None
    variant = "matting" if config.alpha_matting else "plain"
    target_folder = folder / environment.version / config.model / variant
    target_folder.mkdir(parents=True, exist_ok=True)
    paths = {sample.key: target_folder / f"{file_digest(sample.image)}.png" for sample in samples}
    missing = [(sample.image, paths[sample.key]) for sample in samples if not paths[sample.key].is_file()]
    if missing:
        print(f"benchmarks: {config.name}: running rembg on {len(missing)} images", file=sys.stderr)
        rembg_env.run_masks(environment, config.model, config.alpha_matting, missing)
    return paths


def score(sample: Sample, prediction: np.ndarray, truth: np.ndarray, trimap: np.ndarray | None) -> dict[str, object]:
    if sample.has_alpha_truth:
        return metrics.alpha_metrics(prediction, truth, trimap)
    return metrics.binary_metrics(prediction, truth)


def evaluate(samples: list[Sample], configs: list[Config], cache: InferenceCache,
             rembg_masks: dict[str, dict[str, Path]]) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Score every configuration on every sample; return per-image records and seconds per configuration."""
    records = []
    seconds = {config.name: 0.0 for config in configs}
    with cache.installed():
        for sample in tqdm(samples, unit="image", file=sys.stderr, desc="quality"):
            photo = load_photo(sample)
            truth = load_truth(sample.mask)
            if truth.shape != photo.rgb.shape[:2]:
                raise ValueError(f"{sample.mask} is {truth.shape[1]} x {truth.shape[0]} but {sample.image} is "
                                 f"{photo.width} x {photo.height}: the truth must match its photo")
            trimap = load_trimap(sample.trimap) if sample.trimap is not None else None
            results: dict[str, dict[str, object]] = {}
            for config in configs:
                started = time.perf_counter()
                if config.rembg:
                    with Image.open(rembg_masks[config.name][sample.key]) as mask_image:
                        mask = np.asarray(mask_image.convert("L"))
                else:
                    hint = trimap if config.hint else None
                    mask = remove_background(photo.rgb, photo.alpha, config.build_options(), hint=hint).mask
                elapsed = time.perf_counter() - started
                seconds[config.name] += elapsed
                if mask.shape != truth.shape:
                    raise ValueError(f"{config.name} returned a {mask.shape} mask for {sample.image}, "
                                     f"expected {truth.shape}")
                results[config.name] = score(sample, mask.astype(np.float32) / 255.0, truth, trimap)
                results[config.name]["seconds"] = elapsed
            records.append({"source": sample.source, "id": sample.id, "category": sample.category,
                            "gt_type": sample.gt_type, "alpha_truth": sample.has_alpha_truth, "results": results})
    return records, seconds


def summarise(records: list[dict[str, object]], configs: list[Config],
              group_of: Callable[[dict[str, object]], str]) -> dict[str, dict[str, object]]:
    """Average the metrics per group and configuration; maxF comes from the group's mean precision-recall curve."""
    groups: dict[str, list[dict[str, object]]] = {}
    for record in records:
        groups.setdefault(group_of(record), []).append(record)
    summary: dict[str, dict[str, object]] = {}
    for group, members in groups.items():
        alpha_truth = bool(members[0]["alpha_truth"])
        columns = ALPHA_COLUMNS if alpha_truth else BINARY_COLUMNS
        by_config: dict[str, dict[str, float]] = {}
        for config in configs:
            results = [member["results"][config.name] for member in members]  # type: ignore[index]
            values: dict[str, float] = {}
            for key, _ in columns:
                if key == "max_f":
                    precision = np.mean([result["precision_curve"] for result in results], axis=0)
                    recall = np.mean([result["recall_curve"] for result in results], axis=0)
                    values[key] = metrics.max_f(precision, recall)
                else:
                    column = np.asarray([result[key] for result in results], dtype=np.float64)
                    values[key] = float(np.nanmean(column)) if not np.isnan(column).all() else float("nan")
            by_config[config.name] = values
        summary[group] = {"images": len(members), "alpha_truth": alpha_truth, "configs": by_config}
    return summary


def worst_images(records: list[dict[str, object]], reference: str, count: int) -> list[dict[str, object]]:
    ranked = sorted(records, key=lambda record: -float(record["results"][reference]["mae"]))  # type: ignore[index]
    return ranked[:count]


def source_tables(summary: dict[str, dict[str, object]], configs: list[Config]) -> list[str]:
    parts = []
    for group, entry in summary.items():
        alpha_truth = bool(entry["alpha_truth"])
        columns = ALPHA_COLUMNS if alpha_truth else BINARY_COLUMNS
        kind = "alpha mattes" if alpha_truth else "binary masks"
        rows = []
        for config in configs:
            values = entry["configs"][config.name]  # type: ignore[index]
            rows.append([f"`{config.name}`", *(tables.number(values[key]) for key, _ in columns)])
        parts.append(f"#### {group}: {entry['images']} images, {kind}\n\n"
                     + tables.markdown_table(["configuration", *(label for _, label in columns)], rows))
    return parts


def category_tables(summary: dict[str, dict[str, object]], configs: list[Config]) -> list[str]:
    """Build one MAE table per source that has more than one category: categories by configurations."""
    by_source: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for group, entry in summary.items():
        source, category = group.split("/", 1)
        by_source.setdefault(source, []).append((category, entry))
    parts = []
    for source, entries in by_source.items():
        if len(entries) < 2:
            continue
        rows = []
        for category, entry in sorted(entries):
            values = entry["configs"]  # type: ignore[assignment]
            rows.append([category, entry["images"], *(tables.number(values[c.name]["mae"]) for c in configs)])
        parts.append(f"#### {source} by category: MAE ↓\n\n"
                     + tables.markdown_table(["category", "images", *(f"`{c.name}`" for c in configs)], rows))
    return parts


def worst_table(worst: list[dict[str, object]], reference: str, configs: list[Config]) -> str:
    rows = []
    for record in worst:
        results = record["results"]
        rows.append([f"{record['source']}/{record['id']}", record["category"],
                     *(tables.number(results[c.name]["mae"]) for c in configs)])  # type: ignore[index]
    return (f"#### Worst {len(worst)} images by the MAE of `{reference}` (MAE of every configuration)\n\n"
            + tables.markdown_table(["image", "category", *(f"`{c.name}`" for c in configs)], rows, text_columns=2))


def report_markdown(result: dict[str, object], configs: list[Config]) -> str:
    info = result["machine"]
    assert isinstance(info, dict)
    lines = [
        f"Measured {info['date']} with `{result['command']}` on {result['image_count']} images "
        f"({result['sources_text']}).",
        f"Machine: {machine.describe_markdown(info)}.",
        "",
        tables.markdown_table(["configuration", "what runs"], [[f"`{c.name}`", c.description] for c in configs],
                             text_columns=2),
    ]
    notes = result.get("notes") or []
    assert isinstance(notes, list)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    parts = ["\n".join(lines)]
    parts += source_tables(result["by_source"], configs)  # type: ignore[arg-type]
    parts += category_tables(result["by_category"], configs)  # type: ignore[arg-type]
    parts.append(worst_table(result["worst"], str(result["worst_reference"]), configs))  # type: ignore[arg-type]
    return "\n\n".join(parts) + "\n"


def without_curves(records: list[dict[str, object]]) -> list[dict[str, object]]:
    cleaned = []
    for record in records:
        results = {name: {key: value for key, value in values.items() if key not in CURVE_KEYS}
                   for name, values in record["results"].items()}  # type: ignore[union-attr]
        cleaned.append({**record, "results": results})
    return cleaned


def json_safe(value: object) -> object:
    """Replace NaN by None recursively, because JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="evaluation folder with a manifest.csv (source,id,category,gt_type,image,mask,trimap)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every per-image score to FILE")
    parser.add_argument("--configs", metavar="LIST",
                        help="comma-separated configuration names or glob patterns, e.g. 'isnet-*,default' "
                        "(default: all available; see --list-configs)")
    parser.add_argument("--list-configs", action="store_true", help="list the available configurations and exit")
    parser.add_argument("--sources", metavar="LIST", help="comma-separated sources of the manifest to use (default: all)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N images of each source")
    parser.add_argument("--worst", type=int, default=DEFAULT_WORST_COUNT, metavar="N",
                        help="list the N worst images (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"where model outputs and rembg masks are cached (default: {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="run every model again and keep nothing")
    parser.add_argument("--rembg-python", type=Path, metavar="PYTHON",
                        help=f"a Python that can import rembg (default: {rembg_env.DEFAULT_REMBG_VENV}/bin/python)")
    parser.add_argument("--page", type=Path, metavar="FILE",
                        help=f"replace the '{PAGE_SECTION}' section of FILE (e.g. BENCHMARKS.md) with the tables")


def filter_samples(samples: list[Sample], sources: str | None, limit: int | None) -> list[Sample]:
    if sources:
        wanted = {name.strip() for name in sources.split(",") if name.strip()}
        unknown = wanted - {sample.source for sample in samples}
        if unknown:
            raise SystemExit(f"benchmarks: --sources {', '.join(sorted(unknown))} not in the manifest; it has "
                             f"{', '.join(sorted({s.source for s in samples}))}")
        samples = [sample for sample in samples if sample.source in wanted]
    if limit is not None:
        taken: dict[str, int] = {}
        kept = []
        for sample in samples:
            if taken.get(sample.source, 0) < limit:
                kept.append(sample)
                taken[sample.source] = taken.get(sample.source, 0) + 1
        samples = kept
    return samples


def run(arguments: argparse.Namespace, command: str) -> int:
    installed = installed_model_names()
    environment, rembg_status = rembg_env.prepare(arguments.rembg_python)
    try:
        available = engine_configs(installed)
        rembg_models: list[str] = []
        if environment is not None:
            rembg_models = [model for model in environment.models if model in installed]
            available += rembg_configs(rembg_models, environment.version)
        if arguments.list_configs:
            for config in available:
                print(f"{config.name}: {config.description}")
            missing = sorted(set(model_names()) - set(installed))
            if missing:
                print(f"(not installed, so not available: {', '.join(missing)})")
            print(f"({rembg_status})")
            return 0
        if default_model_name() not in installed:
            default_names = ("default", "default-keep-enclosed")
            available = [config for config in available if config.name not in default_names]
        configs = select_configs(available, arguments.configs)
        samples = filter_samples(read_manifest(arguments.data), arguments.sources, arguments.limit)
        print(f"benchmarks: {len(samples)} images, configurations {', '.join(c.name for c in configs)}; "
              f"{rembg_status}", file=sys.stderr)

        cache_root = None if arguments.no_cache else (arguments.cache_dir or default_cache_dir())
        with tempfile.TemporaryDirectory(prefix="benchmark-rembg-") as scratch:
            rembg_masks: dict[str, dict[str, Path]] = {}
            for config in configs:
                if config.rembg:
                    assert environment is not None
                    folder = Path(scratch) if cache_root is None else cache_root / "rembg"
                    rembg_masks[config.name] = prepare_rembg_masks(config, environment, samples, folder)
            cache = InferenceCache(None if cache_root is None else cache_root / "models")
            records, seconds = evaluate(samples, configs, cache, rembg_masks)
    finally:
        if environment is not None:
            environment.cleanup()

    notes = [f"{rembg_status}."]
    if environment is not None:
        notes += environment.notes
    if not any(config.rembg for config in configs):
        notes.append("No rembg configuration was run.")
    notes.append(f"Model outputs: {cache.hits} from the cache, {cache.misses} computed.")
    reference = "default" if any(c.name == "default" for c in configs) else configs[0].name
    result: dict[str, object] = {
        "command": command,
        "machine": machine.describe(),
        "data": str(arguments.data.resolve()),
        "sources_text": ", ".join(f"{source}: {count}" for source, count in
                                  Counter(sample.source for sample in samples).items()),
        "image_count": len(samples),
        "configs": [{"name": c.name, "description": c.description} for c in configs],
        "notes": notes,
        "seconds": seconds,
        "by_source": summarise(records, configs, lambda record: str(record["source"])),
        "by_category": summarise(records, configs, lambda record: f"{record['source']}/{record['category']}"),
        "worst_reference": reference,
        "worst": worst_images(records, reference, arguments.worst),
    }
    markdown = report_markdown(result, configs)
    print(markdown)
    if arguments.page is not None:
        tables.replace_section(arguments.page, PAGE_SECTION, markdown)
        print(f"benchmarks: updated the {PAGE_SECTION} section of {arguments.page}", file=sys.stderr)
    if arguments.json is not None:
        document = {**result, "worst": without_curves(result["worst"]),  # type: ignore[arg-type]
                    "images": without_curves(records)}
        arguments.json.write_text(json.dumps(json_safe(document), indent=1) + "\n", encoding="utf-8")
        print(f"benchmarks: wrote {arguments.json}", file=sys.stderr)
    return 0
