"""Tests of the model catalogue and of the size and sha256 checks on model files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ai_remove_background.catalogue import (
    CATALOGUE_PATH,
    MODELS_DIR_VARIABLE,
    ModelSpec,
    get_model,
    installed_model_names,
    load_catalogue,
    model_names,
    models_dir,
    verified_model_path,
)
from ai_remove_background.errors import ModelInvalidError, ModelMissingError, UserError

CHECKOUT = Path(__file__).resolve().parent.parent
ASTRONAUT = CHECKOUT / "samples" / "astronaut.jpg"
PROGRAM = "ai-remove-background"


def raw_catalogue() -> dict:
    with open(CATALOGUE_PATH, encoding="utf-8") as file:
        return json.load(file)


def test_default_model_listed() -> None:
    raw = raw_catalogue()

    assert raw["default_model"] in raw["models"]
    assert set(raw["default_install"]) <= set(raw["models"])
    assert raw["default_model"] in raw["default_install"]


@pytest.mark.parametrize("name", model_names())
def test_entry_has_engine_fields(name: str) -> None:
    spec = get_model(name)
    model_input = spec.input

    assert spec.name == name
    assert spec.title
    assert spec.licence
    assert spec.subjects in {"any", "people"}
    assert spec.file == Path(spec.file).name
    assert spec.file.endswith(".onnx")
    assert spec.size > 0
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert model_input.name
    assert model_input.resize in {"fixed", "keep"}
    assert model_input.colour_order in {"RGB", "BGR"}
    assert len(model_input.mean) == 3
    assert len(model_input.std) == 3
    assert min(model_input.std) > 0
    assert model_input.divisor == "image_max" or float(model_input.divisor) > 0
    assert spec.output.postprocess in {"clamp", "sigmoid", "minmax"}
    assert spec.output.name is not None or spec.output.index >= 0
    assert spec.combine_with is None or spec.combine_with in model_names()
    assert spec.combine_with != name


@pytest.mark.parametrize("name", model_names())
def test_entry_resize_sizes(name: str) -> None:
    model_input = get_model(name).input

    if model_input.resize == "fixed":
        assert model_input.width > 0
        assert model_input.height > 0
    else:
        assert model_input.max_long_side > 0


@pytest.mark.parametrize("name", model_names())
def test_entry_recurrent_inputs_complete(name: str) -> None:
    model_input = get_model(name).input

    if model_input.recurrent_inputs:
        assert model_input.downsample_ratio_input
        assert model_input.downsample_long_side > 0


@pytest.mark.parametrize("name", model_names())
def test_entry_has_sources(name: str) -> None:
    sources = raw_catalogue()["models"][name]["sources"]

    assert len(sources) >= 1
    assert all(source["kind"] in {"url", "npm", "pypi"} for source in sources)


def test_entry_names_unique_files() -> None:
    files = [get_model(name).file for name in model_names()]

    assert len(set(files)) == len(files)


def test_unknown_model_rejected() -> None:
    with pytest.raises(UserError) as caught:
        get_model("nope")

    assert str(caught.value) == "unknown model 'nope': choose one of isnet, rvm, u2netp"


def test_unhashable_model_rejected() -> None:
    with pytest.raises(UserError):
        get_model(["u2netp"])  # type: ignore[arg-type]


def test_none_gives_default() -> None:
    assert get_model(None).name == load_catalogue()[0]


@pytest.fixture
def real_u2netp() -> bytes:
    spec = get_model("u2netp")
    path = models_dir() / spec.file
    if not path.is_file():
        pytest.fail(f"model u2netp is not installed: run 'python3 install.py --models u2netp' "
                    f"or set {MODELS_DIR_VARIABLE} to a folder holding it")
    return path.read_bytes()


@pytest.fixture
def models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models folder that the engine in this process and its child processes use."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(MODELS_DIR_VARIABLE, str(folder))
    return folder


def run_cli(*arguments: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", *map(str, arguments)],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_verified_path_accepts_real(real_u2netp: bytes, models_folder: Path) -> None:
    spec: ModelSpec = get_model("u2netp")
    (models_folder / spec.file).write_bytes(real_u2netp)

    assert verified_model_path(spec) == models_folder / spec.file
    assert installed_model_names() == ["u2netp"]


def test_verified_path_rejects_missing(models_folder: Path) -> None:
    with pytest.raises(ModelMissingError) as caught:
        verified_model_path(get_model("u2netp"))

    assert str(models_folder / "u2netp.onnx") in str(caught.value)
    assert "python3 install.py --models u2netp" in str(caught.value)


def test_verified_path_rejects_truncated(real_u2netp: bytes, models_folder: Path) -> None:
    (models_folder / "u2netp.onnx").write_bytes(real_u2netp[:-1000])

    with pytest.raises(ModelInvalidError) as caught:
        verified_model_path(get_model("u2netp"))

    message = str(caught.value)
    assert str(models_folder / "u2netp.onnx") in message
    assert f"{len(real_u2netp) - 1000} bytes, expected {len(real_u2netp)}" in message
    assert "python3 install.py --models u2netp" in message


def test_verified_path_rejects_wrong_bytes(real_u2netp: bytes, models_folder: Path) -> None:
    changed = real_u2netp[:5000] + bytes(100) + real_u2netp[5100:]
    (models_folder / "u2netp.onnx").write_bytes(changed)

    with pytest.raises(ModelInvalidError) as caught:
        verified_model_path(get_model("u2netp"))

    message = str(caught.value)
    assert str(models_folder / "u2netp.onnx") in message
    assert "sha256" in message
    assert "python3 install.py --models u2netp" in message


def test_cli_rejects_truncated_model(real_u2netp: bytes, models_folder: Path, tmp_path: Path) -> None:
    (models_folder / "u2netp.onnx").write_bytes(real_u2netp[: len(real_u2netp) // 2])

    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.png")

    lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{PROGRAM}: model file {models_folder / 'u2netp.onnx'} has ")
    assert "truncated" in lines[0]
    assert "python3 install.py --models u2netp" in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_cli_rejects_wrong_bytes(real_u2netp: bytes, models_folder: Path, tmp_path: Path) -> None:
    changed = real_u2netp[:5000] + bytes(100) + real_u2netp[5100:]
    (models_folder / "u2netp.onnx").write_bytes(changed)

    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.png")

    lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert len(lines) == 1
    assert f"model file {models_folder / 'u2netp.onnx'} has sha256 " in lines[0]
    assert "python3 install.py --models u2netp" in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_cli_rejects_missing_model(models_folder: Path, tmp_path: Path) -> None:
    result = run_cli(ASTRONAUT, "--model", "u2netp", "-o", tmp_path / "out.png")

    assert result.returncode == 2
    assert result.stderr == (f"{PROGRAM}: model u2netp is not installed ({models_folder / 'u2netp.onnx'} not found): "
                             "run 'python3 install.py --models u2netp' to fetch it\n")


def test_list_models_state(real_u2netp: bytes, models_folder: Path) -> None:
    (models_folder / "u2netp.onnx").write_bytes(real_u2netp)

    result = run_cli("--list-models")

    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert "not installed" in lines["isnet (default)"]
    assert "not installed" in lines["rvm"]
    assert ", installed;" in lines["u2netp"]
