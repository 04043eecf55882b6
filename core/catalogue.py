"""The model catalogue: every fact about each model, read from models/catalogue.json.

The same JSON file drives install.py (sources and digests) and the engine (file, input,
normalisation, output), so a model's facts live in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelInvalidError, ModelMissingError, UserError

CHECKOUT = Path(__file__).resolve().parent.parent
CATALOGUE_PATH = CHECKOUT / "models" / "catalogue.json"
MODELS_DIR_VARIABLE = "AI_REMOVE_BACKGROUND_MODELS"
DEFAULT_MODELS_DIR = CHECKOUT / "models" / "files"
HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class InputSpec:
    name: str
    resize: str  # "fixed": to width x height; "keep": keep the aspect, capped at max_long_side
    width: int
    height: int
    max_long_side: int
    colour_order: str
    divisor: float | str  # a number, or "image_max" to divide by the image's own maximum
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    recurrent_inputs: tuple[str, ...]
    downsample_ratio_input: str | None
    downsample_long_side: int


@dataclass(frozen=True)
class OutputSpec:
    name: str | None
    index: int
    postprocess: str  # "clamp", "sigmoid" or "minmax"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    subjects: str
    file: str
    size: int
    sha256: str
    licence: str
    input: InputSpec
    output: OutputSpec
    # A second model whose mask is combined with this one's by pixel-wise maximum, because it
    # finds secondary objects that this model drops; None for no combination.
    combine_with: str | None = None

    @property
    def path(self) -> Path:
        return models_dir() / self.file


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_VARIABLE, DEFAULT_MODELS_DIR))


def _parse_model(name: str, entry: dict[str, Any]) -> ModelSpec:
    raw_input = entry["input"]
    raw_output = entry["output"]
    model_input = InputSpec(
        name=raw_input["name"],
        resize=raw_input["resize"],
        width=int(raw_input.get("width", 0)),
        height=int(raw_input.get("height", 0)),
        max_long_side=int(raw_input.get("max_long_side", 0)),
        colour_order=raw_input.get("colour_order", "RGB"),
        divisor=raw_input["divisor"],
        mean=tuple(raw_input["mean"]),
        std=tuple(raw_input["std"]),
        recurrent_inputs=tuple(raw_input.get("recurrent_inputs", ())),
        downsample_ratio_input=raw_input.get("downsample_ratio_input"),
        downsample_long_side=int(raw_input.get("downsample_long_side", 0)),
    )
    model_output = OutputSpec(
        name=raw_output.get("name"),
        index=int(raw_output.get("index", 0)),
        postprocess=raw_output["postprocess"],
    )
    return ModelSpec(
        name=name,
        title=entry["title"],
        subjects=entry["subjects"],
        file=entry["file"],
        size=int(entry["size"]),
        sha256=entry["sha256"],
        licence=entry["licence"],
        input=model_input,
        output=model_output,
        combine_with=entry.get("combine_with"),
    )


@lru_cache(maxsize=None)
def load_catalogue(path: Path = CATALOGUE_PATH) -> tuple[str, dict[str, ModelSpec]]:
    """Return (default model name, models by name)."""
    with open(path, encoding="utf-8") as file:
        raw = json.load(file)
    models = {name: _parse_model(name, entry) for name, entry in raw["models"].items()}
    return raw["default_model"], models


def default_model_name() -> str:
    return load_catalogue()[0]


def model_names() -> list[str]:
    return sorted(load_catalogue()[1])


def get_model(name: str | None) -> ModelSpec:
    default, models = load_catalogue()
    chosen = name or default
    if not isinstance(chosen, str) or chosen not in models:
        raise UserError(f"unknown model {chosen!r}: choose one of {', '.join(sorted(models))}")
    return models[chosen]


def installed_model_names() -> list[str]:
    """Names of the models whose file is present with the catalogue's size (digest not checked)."""
    return [name for name, spec in sorted(load_catalogue()[1].items())
            if spec.path.is_file() and spec.path.stat().st_size == spec.size]


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


# Files already verified in this process, keyed by (path, size, modification time in ns).
_verified: set[tuple[str, int, int]] = set()


def verified_model_path(spec: ModelSpec) -> Path:
    """Return the model's file after checking its size and sha256; raise a UserError otherwise."""
    path = spec.path
    install_hint = f"run 'python3 install.py --models {spec.name}' to fetch it"
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ModelMissingError(f"model {spec.name} is not installed ({path} not found): {install_hint}") from None
    key = (str(path), status.st_size, status.st_mtime_ns)
    if key in _verified:
        return path
    if status.st_size != spec.size:
        raise ModelInvalidError(
            f"model file {path} has {status.st_size} bytes, expected {spec.size} (truncated or wrong file): "
            f"delete it and {install_hint}"
        )
    try:
        actual = sha256_of_file(path)
    except OSError as error:
        raise ModelInvalidError(
            f"model file {path} could not be read ({error.strerror or error}): check its permissions, or delete "
            f"it and {install_hint}"
        ) from None
    if actual != spec.sha256:
        raise ModelInvalidError(
            f"model file {path} has sha256 {actual[:16]}…, expected {spec.sha256[:16]}…: delete it and {install_hint}"
        )
    _verified.add(key)
    return path
