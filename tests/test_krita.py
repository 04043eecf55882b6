"""The Krita plug-in inside real Krita 5.2, from the editor chroot (tests/editors/chroot.sh), and its installer.

The plug-in is installed with installer.krita into a private HOME and finds the engine through
the engine.json it writes, as on a user's machine. One Krita start runs every case of CASES
through the driver plug-in in tests/editors/krita-pykrita; each test below checks one recorded
result. Reference masks come from the engine's CLI run inside the chroot on the same pixels.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from editors.host import CHECKOUT, EditorHost
from editors.kra_reader import KraFile, lzf_decompress
from editors.krita_png import read_png_rgba, to_eight_bit
from editors.trimaps import UNKNOWN, astronaut_trimap, write_astronaut_trimap

pytestmark = pytest.mark.krita

sys.path.insert(0, str(CHECKOUT))
from installer import krita as krita_installer  # noqa: E402
from installer.common import OWNER_MARKER, Engine, InstallError, Manifest  # noqa: E402

INSTALLER = CHECKOUT / "tests" / "editors" / "krita_install.py"
DRIVER_PLUGINS = CHECKOUT / "tests" / "editors" / "krita-pykrita"
DRIVER_NAME = "ai_remove_background_test_driver"
SAMPLES = CHECKOUT / "samples"
ASTRONAUT = str(SAMPLES / "astronaut.jpg")
CHELSEA = str(SAMPLES / "chelsea.jpg")
XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24 -nolisten tcp"]
KRITA_TIMEOUT_SECONDS = 900
# Masks of the same pixels may differ by one level where the engine rounds a value near .5.
MASK_TOLERANCE = 1
FAST_MODEL = "u2netp"
MASK_NAME = "AI background mask ({})"
SELECTION_BOX = (100, 0, 300, 400)  # x, y, width, height
LAYER_OFFSET = (-100, 60)
COPY_OFFSET = (40, 0)
GREEN = "#00ff00"
BLUR_RADIUS = 8
EXPORT_REFERENCE_CASES = ["graya_u8", "cmyka_u8", "laba_u16"]
# Sample types of the driver's dumps, by Krita colour depth (masks are always U8).
DUMP_DTYPES = {"U8": np.uint8, "U16": np.dtype("=u2"), "F16": np.dtype("=f2"), "F32": np.dtype("=f4")}
LAYER_LIMIT_VARIABLE = "AI_REMOVE_BACKGROUND_MAX_MEGAPIXELS"
LAYER_LIMIT_MEGAPIXELS = 0.2
HANG_TIMEOUT_SECONDS = 3

CASES: list[dict[str, Any]] = [
    {"name": "menu_astronaut", "open": ASTRONAUT, "trigger": "menu", "settings": {"model": "isnet"},
     "save": True, "undo": 1},
    {"name": "cancel", "open": ASTRONAUT, "settings": {"model": "isnet"}, "cancel": True, "save_around": True},
    {"name": "chelsea", "open": CHELSEA, "settings": {"model": "isnet"}},
    {"name": "offset", "open": ASTRONAUT, "settings": {"model": FAST_MODEL}, "layer_offset": list(LAYER_OFFSET),
     "save": True},
    {"name": "graya_u8", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc"], "export_before": True},
    {"name": "cmyka_u8", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["CMYKA", "U8", "Artifex CMYK SWOP Profile"], "export_before": True},
    {"name": "laba_u16", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["LABA", "U16", "Lab identity built-in"], "export_before": True},
    {"name": "rgba_u16_srgb", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc"]},
    {"name": "rgba_u16_linear", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["RGBA", "U16", "sRGB-elle-V2-g10.icc"]},
    {"name": "rgba_f32_linear", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "color_space": ["RGBA", "F32", "sRGB-elle-V2-g10.icc"]},
    {"name": "selection", "open": ASTRONAUT, "settings": {"model": FAST_MODEL}, "selection": list(SELECTION_BOX)},
    {"name": "output_selection", "open": ASTRONAUT, "settings": {"model": FAST_MODEL, "output": "selection"}},
    {"name": "output_layer", "open": ASTRONAUT, "settings": {"model": FAST_MODEL, "output": "layer"}, "undo": 1},
    {"name": "output_layer_f16", "open": ASTRONAUT, "settings": {"model": FAST_MODEL, "output": "layer"},
     "color_space": ["RGBA", "F16", "sRGB-elle-V2-g10.icc"]},
    {"name": "output_background_color", "open": ASTRONAUT, "export_before": True, "save": True, "undo": 3,
     "settings": {"model": FAST_MODEL, "output": "background", "background": "color", "background_color": GREEN}},
    {"name": "output_background_blur", "open": ASTRONAUT, "export_before": True, "save": True,
     "settings": {"model": FAST_MODEL, "output": "background", "background": "blur", "blur_radius": BLUR_RADIUS}},
    {"name": "group", "open": ASTRONAUT, "settings": {"model": FAST_MODEL}, "wrap_in_group": True},
    {"name": "two_layers", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "duplicate_layer": list(COPY_OFFSET), "select_all_layers": True},
    {"name": "dialog", "open": ASTRONAUT, "batch": False, "settings": {"model": "isnet", "output": "mask"},
     "dialog": {"model": FAST_MODEL, "output": "layer"}},
    {"name": "error_filter_layer", "open": ASTRONAUT, "target": "filter_layer", "save_around": True},
    {"name": "error_message_box", "open": ASTRONAUT, "target": "filter_layer", "batch": False},
    {"name": "error_empty_layer", "open": ASTRONAUT, "target": "empty_layer", "save_around": True},
    {"name": "error_engine", "open": ASTRONAUT, "settings": {"model": "no-such-model"}, "save_around": True},
    # 'Background' (cropped to 0.09 megapixels) is processed first and fits the limit; 'Copy'
    # (0.262 megapixels) does not.
    {"name": "error_second_layer", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "duplicate_layer": list(COPY_OFFSET), "crop_layer": [0, 0, 300, 300], "select_all_layers": True,
     "engine": {"environment": {LAYER_LIMIT_VARIABLE: str(LAYER_LIMIT_MEGAPIXELS)}}},
    # "python" of the two error_worker_* cases is filled in with stand-in engines when the session starts.
    {"name": "error_worker_hangs", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "engine": {"timeout_seconds": HANG_TIMEOUT_SECONDS}, "save_around": True, "watch_worker": True},
    {"name": "error_worker_killed", "open": ASTRONAUT, "settings": {"model": FAST_MODEL},
     "engine": {}, "save_around": True, "watch_worker": True},
    {"name": "after_engine_faults", "open": CHELSEA, "settings": {"model": FAST_MODEL}},
    # "hint_mask_raw" is filled in with the astronaut's trimap when the session starts.
    {"name": "refine_from_mask", "open": ASTRONAUT, "settings": {"model": FAST_MODEL, "refine_from_mask": "true"},
     "save": True, "undo": 2},
]


@dataclass
class KritaSession:
    host: EditorHost
    run_dir: str  # path inside the chroot
    home: str  # path inside the chroot
    results: dict[str, Any]
    krita_log: str
    references: dict[str, np.ndarray]

    def case(self, name: str) -> dict[str, Any]:
        for case in self.results["cases"]:
            if case["name"] == name:
                assert not case["driver_error"], case["driver_error"]
                return case
        raise AssertionError(f"case {name!r} missing from the Krita run; log tail:\n{self.krita_log[-3000:]}")

    def path(self, chroot_path: str) -> Path:
        return self.host.host_path(chroot_path)

    def dump(self, case: dict[str, Any], node_name: str, index: int = 0) -> tuple[np.ndarray, list[int]]:
        """Return a created node's dumped mask (or alpha) as 8-bit levels, and its bounds."""
        entry = case["dumps"][node_name][index]
        _, _, width, height = entry["bounds"]
        samples = np.frombuffer(self.path(entry["file"]).read_bytes(), DUMP_DTYPES[entry["depth"]])
        if entry["depth"] == "U16":
            samples = np.rint(samples / 257)
        elif entry["depth"] in ("F16", "F32"):
            samples = np.rint(samples.astype(np.float64) * 255)
        return samples.astype(np.uint8).reshape(height, width), entry["bounds"]

    def image(self, chroot_path: str) -> np.ndarray:
        with Image.open(self.path(chroot_path)) as image:
            return np.asarray(image.convert("RGBA"))


def level_difference(actual: np.ndarray, expected: np.ndarray) -> str:
    difference = np.abs(actual.astype(int) - expected.astype(int))
    return (f"max difference {difference.max()} levels, {int((difference > MASK_TOLERANCE).sum())} of "
            f"{difference.size} pixels beyond {MASK_TOLERANCE}")


def assert_masks_match(actual: np.ndarray, expected: np.ndarray, tolerance: int = MASK_TOLERANCE) -> None:
    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= tolerance, level_difference(actual, expected)


def node_names(tree: list[dict[str, Any]]) -> list[str]:
    return [node["name"] for node in tree]


def children(tree: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return next(node["children"] for node in tree if node["name"] == name)


# ----------------------------------------------------------------------------- the Krita session
def install_plugin(host: EditorHost, run_dir: str, home: str) -> None:
    """Install the plug-in with installer.krita inside the chroot, then add the test driver."""
    result = host.run(
        ["python3", str(INSTALLER), host.engine_python, host.models_dir, f"{run_dir}/manifest.json"],
        env={"HOME": home},
    )
    assert result.returncode == 0, f"installing the Krita plug-in failed:\n{result.stdout}\n{result.stderr}"
    pykrita = host.host_path(home) / ".local" / "share" / "krita" / "pykrita"
    subprocess.run(["cp", "-r", f"{DRIVER_PLUGINS}/.", str(pykrita)], check=True)
    kritarc = host.host_path(home) / ".config" / "kritarc"
    text, _, _ = krita_installer.set_ini_value(kritarc.read_text(), "python", f"enable_{DRIVER_NAME}", "true")
    kritarc.write_text(text)


def run_cli(host: EditorHost, model: str, inputs: list[str], output_dir: str, options: tuple[str, ...] = ()) -> None:
    cli = str(Path(host.engine_python).parent / "ai-remove-background")
    result = host.run(
        [cli, *inputs, "--mask", "--model", model, *options, "--overwrite", "-o", output_dir],
        env={"AI_REMOVE_BACKGROUND_MODELS": host.models_dir},
        timeout=600,
    )
    assert result.returncode == 0, f"the CLI failed on {inputs}:\n{result.stdout}\n{result.stderr}"


def eight_bit_export(host: EditorHost, run_dir: str, case: dict[str, Any]) -> str:
    """Return Krita's export of a case's document, rounded to 8 bits when Krita wrote 16.

    The file is named after the case, so that its reference mask is "<model>/<case name>".
    """
    samples, bit_depth = read_png_rgba(str(host.host_path(case["png_before"])))
    if bit_depth == 8:
        path = f"{run_dir}/{case['name']}.png"
        shutil.copyfile(host.host_path(case["png_before"]), host.host_path(path))
        return path
    # Pillow would drop the low byte of 16-bit samples, but the engine rounds them.
    path = f"{run_dir}/{case['name']}.png"
    Image.fromarray(to_eight_bit(samples, bit_depth)).save(host.host_path(path))
    return path


def compute_references(host: EditorHost, run_dir: str, results: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the CLI on the photos, a crop for the selection case and Krita's own exports."""
    crop_path = f"{run_dir}/selection_crop.png"
    x, y, width, height = SELECTION_BOX
    with Image.open(ASTRONAUT) as photo:
        photo.crop((x, y, x + width, y + height)).save(host.host_path(crop_path))
    exported = [eight_bit_export(host, run_dir, case) for case in results["cases"]
                if case["name"] in EXPORT_REFERENCE_CASES and case.get("png_before_exported")]
    jobs = {"isnet": [ASTRONAUT, CHELSEA], FAST_MODEL: [ASTRONAUT, crop_path, *exported]}
    references = {}
    for model, inputs in jobs.items():
        output_dir = f"{run_dir}/cli-{model}"
        host.host_path(output_dir).mkdir()
        run_cli(host, model, inputs, output_dir)
        for path in inputs:
            stem = Path(path).stem
            with Image.open(host.host_path(f"{output_dir}/{stem}.png")) as mask:
                references[f"{model}/{stem}"] = np.asarray(mask.convert("L"))
    output_dir = f"{run_dir}/cli-hint"
    host.host_path(output_dir).mkdir()
    run_cli(host, FAST_MODEL, [ASTRONAUT], output_dir, ("--hint-mask", trimap_png_path(run_dir)))
    with Image.open(host.host_path(f"{output_dir}/{Path(ASTRONAUT).stem}.png")) as mask:
        references["hint/astronaut"] = np.asarray(mask.convert("L"))
    return references


def session_cases(host: EditorHost, run_dir: str) -> list[dict[str, Any]]:
    """Return CASES with the files that live in the run folder: the stand-in engines and the trimap."""
    stand_ins = {"error_worker_hangs": host.stand_in_engine(run_dir, "hang"),
                 "error_worker_killed": host.stand_in_engine(run_dir, "killed")}
    trimap = astronaut_trimap()
    host.host_path(trimap_raw_path(run_dir)).write_bytes(trimap.tobytes())
    write_astronaut_trimap(host.host_path(trimap_png_path(run_dir)))
    cases = []
    for case in CASES:
        if case["name"] in stand_ins:
            case = dict(case, engine=dict(case["engine"], python=stand_ins[case["name"]]))
        elif case["name"] == "refine_from_mask":
            case = dict(case, hint_mask_raw=[trimap_raw_path(run_dir), trimap.shape[1], trimap.shape[0]])
        cases.append(case)
    return cases


def trimap_raw_path(run_dir: str) -> str:
    return f"{run_dir}/astronaut-trimap.u8"


def trimap_png_path(run_dir: str) -> str:
    return f"{run_dir}/astronaut-trimap.png"


@pytest.fixture(scope="module")
def session(editor_host: EditorHost) -> Iterator[KritaSession]:
    run_dir = editor_host.new_run_dir()
    home = f"{run_dir}/home"
    editor_host.host_path(home).mkdir()
    install_plugin(editor_host, run_dir, home)

    output_dir = f"{run_dir}/out"
    editor_host.host_path(output_dir).mkdir()
    scenario = f"{run_dir}/scenario.json"
    editor_host.host_path(scenario).write_text(json.dumps({
        "results": f"{run_dir}/results.json",
        "output_dir": output_dir,
        "watchdog_seconds": KRITA_TIMEOUT_SECONDS - 60,
        "case_timeout_seconds": 300,
        "cases": session_cases(editor_host, run_dir),
    }))
    command = ["timeout", "-k", "10", str(KRITA_TIMEOUT_SECONDS), *XVFB, "krita", "--nosplash"]
    result = editor_host.run(command, env={"HOME": home, "AIRB_KRITA_SCENARIO": scenario},
                             timeout=KRITA_TIMEOUT_SECONDS + 60)
    krita_log = result.stdout + result.stderr
    (editor_host.host_path(run_dir) / "krita.log").write_text(krita_log)
    results_path = editor_host.host_path(f"{run_dir}/results.json")
    assert results_path.is_file(), f"Krita wrote no results (exit status {result.returncode}):\n{krita_log[-5000:]}"
    results = json.loads(results_path.read_text())
    assert result.returncode == 0, f"Krita exited with status {result.returncode}:\n{krita_log[-5000:]}"
    references = compute_references(editor_host, run_dir, results)
    yield KritaSession(editor_host, run_dir, home, results, krita_log, references)
    # Krita's resource files make the HOME about 80 MB; the outputs and the log are kept.
    shutil.rmtree(editor_host.host_path(home), ignore_errors=True)


# ----------------------------------------------------------------------------- installation in the chroot
def test_installed_into_private_home(session: KritaSession) -> None:
    home = session.path(session.home)
    plugin = home / ".local" / "share" / "krita" / "pykrita" / "ai_remove_background"
    assert (plugin / "engine.json").is_file()
    assert (plugin / "worker_client.py").is_file()
    assert (plugin / OWNER_MARKER).is_file()
    assert (plugin.parent / "ai_remove_background.desktop").is_file()
    assert (home / ".local" / "share" / "krita" / "actions" / "ai_remove_background.action").is_file()
    engine = json.loads((plugin / "engine.json").read_text())
    assert engine["python"] == session.host.engine_python


def test_krita_version(session: KritaSession) -> None:
    assert session.results["krita_version"].startswith("5.2")


# ----------------------------------------------------------------------------- menu, real model, files
def test_action_is_in_filter_menu(session: KritaSession) -> None:
    case = session.case("menu_astronaut")
    assert case["menu_paths"] == ["Filter"]
    assert case["menu_item_enabled"] is True


def test_menu_item_adds_transparency_mask(session: KritaSession) -> None:
    case = session.case("menu_astronaut")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    masks = children(case["layers_after"], "Background")
    assert [(mask["name"], mask["type"]) for mask in masks] == [(MASK_NAME.format("isnet"), "transparencymask")]


def test_astronaut_mask_matches_cli(session: KritaSession) -> None:
    mask, bounds = session.dump(session.case("menu_astronaut"), MASK_NAME.format("isnet"))
    assert bounds == [0, 0, 512, 512]
    assert_masks_match(mask, session.references["isnet/astronaut"])


def test_chelsea_mask_matches_cli(session: KritaSession) -> None:
    case = session.case("chelsea")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    mask, bounds = session.dump(case, MASK_NAME.format("isnet"))
    assert bounds == [0, 0, 451, 300]
    assert_masks_match(mask, session.references["isnet/chelsea"])


def test_saved_kra_holds_the_mask(session: KritaSession) -> None:
    case = session.case("menu_astronaut")
    assert case["kra_saved"] is True
    kra = KraFile(str(session.path(case["kra"])))
    masks = kra.masks()
    assert [(mask.name, mask.parent) for mask in masks] == [(MASK_NAME.format("isnet"), "Background")]
    stored = np.frombuffer(kra.mask_pixels(masks[0], 0, 0, 512, 512), np.uint8).reshape(512, 512)
    assert_masks_match(stored, session.references["isnet/astronaut"])


def test_exported_png_alpha_equals_mask(session: KritaSession) -> None:
    case = session.case("menu_astronaut")
    assert case["png_exported"] is True
    mask, _ = session.dump(case, MASK_NAME.format("isnet"))
    alpha = session.image(case["png"])[..., 3]
    assert_masks_match(alpha, mask)


def test_undo_removes_mask(session: KritaSession) -> None:
    case = session.case("menu_astronaut")
    assert case["layers_after_undo"] == case["layers_before"]
    assert children(case["layers_after_undo"], "Background") == []


# ----------------------------------------------------------------------------- geometry
def test_offset_layer_read_at_its_bounds(session: KritaSession) -> None:
    case = session.case("offset")
    assert case["target"]["bounds"] == [*LAYER_OFFSET, 512, 512]
    mask, bounds = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert bounds == [*LAYER_OFFSET, 512, 512]
    assert_masks_match(mask, session.references[f"{FAST_MODEL}/astronaut"])


def test_offset_layer_kra_mask(session: KritaSession) -> None:
    case = session.case("offset")
    kra = KraFile(str(session.path(case["kra"])))
    stored = kra.mask_pixels(kra.masks()[0], *LAYER_OFFSET, 512, 512)
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert stored == mask.tobytes()


def test_offset_layer_png_alpha(session: KritaSession) -> None:
    case = session.case("offset")
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    alpha = session.image(case["png"])[..., 3]
    dx, dy = LAYER_OFFSET
    # Canvas pixel (cx, cy) shows layer pixel (cx - dx, cy - dy), and the rest of the canvas is empty.
    assert_masks_match(alpha[dy:, :512 + dx], mask[:512 - dy, -dx:])
    assert alpha[:dy, :].max() == 0
    assert alpha[:, 512 + dx:].max() == 0


def test_group_layer_gets_mask(session: KritaSession) -> None:
    case = session.case("group")
    assert case["target"]["type"] == "grouplayer"
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    assert [mask["type"] for mask in children(case["layers_after"], "Group")] == ["paintlayer", "transparencymask"]
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert_masks_match(mask, session.references[f"{FAST_MODEL}/astronaut"])


def test_every_selected_layer_gets_mask(session: KritaSession) -> None:
    case = session.case("two_layers")
    assert sorted(case["selected_nodes"]) == ["Background", "Copy"]
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    for index in range(2):
        mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL), index)
        assert_masks_match(mask, session.references[f"{FAST_MODEL}/astronaut"])
    assert len(case["dumps"][MASK_NAME.format(FAST_MODEL)]) == 2


# ----------------------------------------------------------------------------- colour models and depths
@pytest.mark.parametrize("name", ["rgba_u16_srgb", "rgba_u16_linear", "rgba_f32_linear"])
def test_depths_match_cli(session: KritaSession, name: str) -> None:
    case = session.case(name)
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert_masks_match(mask, session.references[f"{FAST_MODEL}/astronaut"])


@pytest.mark.parametrize("name", EXPORT_REFERENCE_CASES)
def test_colour_models_match_cli_on_krita_export(session: KritaSession, name: str) -> None:
    # Converting the photo to these models changes its pixels, so the reference is the CLI's
    # mask of Krita's own PNG export of the converted document.
    case = session.case(name)
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    assert case["png_before_exported"] is True
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert_masks_match(mask, session.references[f"{FAST_MODEL}/{name}"])


@pytest.mark.parametrize("name", ["graya_u8", "cmyka_u8", "laba_u16", "rgba_f32_linear"])
def test_colour_conversion_leaves_document_alone(session: KritaSession, name: str) -> None:
    case = session.case(name)
    before = case["layers_before"][0]
    after = case["layers_after"][0]
    assert after["color"] == before["color"]
    assert [child["type"] for child in after["children"]] == ["transparencymask"]


# ----------------------------------------------------------------------------- selection
def test_selection_limits_mask(session: KritaSession) -> None:
    case = session.case("selection")
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    x, y, width, height = SELECTION_BOX
    outside = mask.copy()
    outside[y:y + height, x:x + width] = 0
    assert outside.max() == 0
    assert_masks_match(mask[y:y + height, x:x + width], session.references[f"{FAST_MODEL}/selection_crop"])


# ----------------------------------------------------------------------------- outputs
def test_output_selection(session: KritaSession) -> None:
    case = session.case("output_selection")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    assert case["outcome"]["created"] == []
    # Krita keeps the global selection as a selection mask node at the top level.
    layers = [node for node in case["layers_after"] if node["type"] != "selectionmask"]
    assert layers == case["layers_before"]
    selection = np.frombuffer(session.path(case["selection"]["file"]).read_bytes(), np.uint8).reshape(512, 512)
    assert_masks_match(selection, session.references[f"{FAST_MODEL}/astronaut"])


def test_output_new_layer(session: KritaSession) -> None:
    case = session.case("output_layer")
    assert node_names(case["layers_after"]) == ["Background", "Background (background removed)"]
    assert children(case["layers_after"], "Background") == []
    alpha, _ = session.dump(case, "Background (background removed)")
    assert_masks_match(alpha, session.references[f"{FAST_MODEL}/astronaut"])


def test_output_new_layer_keeps_float_depth(session: KritaSession) -> None:
    case = session.case("output_layer_f16")
    layer = case["layers_after"][1]
    assert (layer["name"], layer["color"]) == ("Background (background removed)", ["RGBA", "F16", "sRGB-elle-V2-g10.icc"])
    alpha, _ = session.dump(case, "Background (background removed)")
    assert_masks_match(alpha, session.references[f"{FAST_MODEL}/astronaut"])


def test_output_new_layer_undo(session: KritaSession) -> None:
    case = session.case("output_layer")
    assert case["layers_after_undo"] == case["layers_before"]


def test_output_background_color_layers(session: KritaSession) -> None:
    case = session.case("output_background_color")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    layers = case["layers_after"]
    assert [(layer["name"], layer["type"]) for layer in layers] == [
        ("Background background", "filllayer"), ("Background", "paintlayer")]
    assert [mask["type"] for mask in children(layers, "Background")] == ["transparencymask"]


def test_output_background_color_pixels(session: KritaSession) -> None:
    case = session.case("output_background_color")
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    composite = session.image(case["png"])
    original = session.image(case["png_before"])
    assert composite[..., 3].min() == 255
    background = mask == 0
    subject = mask == 255
    assert background.sum() > 10_000
    assert subject.sum() > 10_000
    assert (composite[background][:, :3] == [0, 255, 0]).all()
    assert np.abs(composite[subject][:, :3].astype(int) - original[subject][:, :3]).max() <= 1


def test_output_background_undo(session: KritaSession) -> None:
    case = session.case("output_background_color")
    assert case["layers_after_undo"] == case["layers_before"]


def test_output_background_blur(session: KritaSession) -> None:
    case = session.case("output_background_blur")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    layers = case["layers_after"]
    assert node_names(layers) == ["Background background (blurred)", "Background"]
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    composite = session.image(case["png"]).astype(int)
    original = session.image(case["png_before"]).astype(int)
    inner = (slice(3 * BLUR_RADIUS, -3 * BLUR_RADIUS),) * 2
    assert composite[inner][..., 3].min() == 255
    background = (mask == 0)[inner]
    subject = (mask == 255)[inner]
    blurred_change = np.abs(composite[inner][background][:, :3] - original[inner][background][:, :3]).mean()
    assert blurred_change > 2
    assert np.abs(composite[inner][subject][:, :3] - original[inner][subject][:, :3]).max() <= 1


# ----------------------------------------------------------------------------- dialog, cancel, errors
def test_options_dialog_is_used_and_remembered(session: KritaSession) -> None:
    case = session.case("dialog")
    assert case["options_dialog_seen"] is True
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    assert case["outcome"]["created"] == ["Background (background removed)"]
    assert case["settings_after"]["model"] == FAST_MODEL
    assert case["settings_after"]["output"] == "layer"


def test_cancel_leaves_document_unchanged(session: KritaSession) -> None:
    case = session.case("cancel")
    assert case["progress_dialog_seen"] is True
    assert case["outcome"]["status"] == "cancelled"
    assert case["layers_after"] == case["layers_before"]


def test_run_after_cancel_works(session: KritaSession) -> None:
    case = session.case("chelsea")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]


def test_filter_layer_is_refused_with_reason(session: KritaSession) -> None:
    case = session.case("error_filter_layer")
    assert case["outcome"]["status"] == "error"
    assert "'Invert' is a filter layer" in case["outcome"]["message"]
    assert "select a paint layer" in case["outcome"]["message"]
    assert case["layers_after"] == case["layers_before"]


def test_error_shown_in_message_box(session: KritaSession) -> None:
    case = session.case("error_message_box")
    assert len(case["modal_texts"]) == 1
    assert "'Invert' is a filter layer" in case["modal_texts"][0]


def test_empty_layer_is_refused(session: KritaSession) -> None:
    case = session.case("error_empty_layer")
    assert case["outcome"]["status"] == "error"
    assert "'Empty' is empty" in case["outcome"]["message"]
    assert case["layers_after"] == case["layers_before"]


def test_engine_error_reaches_user(session: KritaSession) -> None:
    case = session.case("error_engine")
    assert case["outcome"]["status"] == "error"
    assert "no-such-model" in case["outcome"]["message"]
    assert case["layers_after"] == case["layers_before"]


def test_failing_layer_leaves_finished_layers_done(session: KritaSession) -> None:
    case = session.case("error_second_layer")
    assert case["selected_nodes"] == ["Background", "Copy"]
    outcome = case["outcome"]
    assert outcome["status"] == "error"
    assert outcome["message"].startswith(
        "Removing the background failed: layer 'Copy': layer is 512 x 512 (0.262 megapixels), over the limit of "
        f"{LAYER_LIMIT_MEGAPIXELS:g}: scale it down, or raise the limit with {LAYER_LIMIT_VARIABLE} in the "
        "environment of the plug-in's engine.json. Removed the background of 'Background' (u2netp on ")
    assert outcome["message"].endswith(" Left unchanged: 'Copy'.")
    assert outcome["created"] == [MASK_NAME.format(FAST_MODEL)]
    layers = {node["name"]: node for node in case["layers_after"]}
    assert [child["type"] for child in layers["Background"]["children"]] == ["transparencymask"]
    assert layers["Copy"]["children"] == []
    before = {node["name"]: node for node in case["layers_before"]}
    assert layers["Copy"] == before["Copy"]
    mask, bounds = session.dump(case, MASK_NAME.format(FAST_MODEL))
    assert bounds == [0, 0, 300, 300]
    assert 0.05 < (mask > 127).mean() < 0.95, "the finished layer's mask keeps no subject or everything"


def test_refine_from_mask_replaces_it(session: KritaSession) -> None:
    case = session.case("refine_from_mask")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]
    before = {node["name"]: node for node in case["layers_before"]}
    after = {node["name"]: node for node in case["layers_after"]}
    assert [child["name"] for child in before["Background"]["children"]] == ["My mask"]
    assert [child["name"] for child in after["Background"]["children"]] == [MASK_NAME.format(FAST_MODEL)]
    mask, _ = session.dump(case, MASK_NAME.format(FAST_MODEL))
    trimap = astronaut_trimap()
    assert (mask[trimap == 255] == 255).all(), "painted white pixels changed"
    assert (mask[trimap == 0] == 0).all(), "painted black pixels changed"
    band = mask[trimap == UNKNOWN]
    assert ((band > 0) & (band < 255)).mean() > 0.3, "the band between black and white was not solved"
    assert_masks_match(mask, session.references["hint/astronaut"])


def test_refine_from_mask_undo_restores_it(session: KritaSession) -> None:
    case = session.case("refine_from_mask")
    after_undo = {node["name"]: node for node in case["layers_after_undo"]}
    assert [child["name"] for child in after_undo["Background"]["children"]] == ["My mask"]


def saved_kra_members(session: KritaSession, path: str) -> dict[str, bytes]:
    """Return the members of a saved .kra, except documentinfo.xml, which records the save time."""
    with zipfile.ZipFile(session.path(path)) as archive:
        return {name: archive.read(name) for name in archive.namelist() if name != "documentinfo.xml"}


@pytest.mark.parametrize("name", ["cancel", "error_filter_layer", "error_empty_layer", "error_engine",
                                  "error_worker_hangs", "error_worker_killed"])
def test_failed_run_saves_identical_file(session: KritaSession, name: str) -> None:
    case = session.case(name)
    assert case["kra_before_saved"] and case["kra_after_saved"]
    before = saved_kra_members(session, case["kra_before"])
    after = saved_kra_members(session, case["kra_after"])
    assert "maindoc.xml" in before
    assert len(before) > 3
    assert sorted(after) == sorted(before)
    changed = [member for member in before if after[member] != before[member]]
    assert not changed, f"members that differ after the run: {changed}"


def test_hung_worker_times_out(session: KritaSession) -> None:
    case = session.case("error_worker_hangs")
    assert case["outcome"]["status"] == "error"
    assert case["outcome"]["message"].startswith(
        f"Removing the background failed: layer 'Background': the engine sent nothing for {HANG_TIMEOUT_SECONDS} s "
        "and was stopped: try again; for very large layers, raise timeout_seconds in ")
    assert case["worker_left_running"] is False
    assert case["layers_after"] == case["layers_before"]


def test_killed_worker_reported(session: KritaSession) -> None:
    case = session.case("error_worker_killed")
    assert case["outcome"]["status"] == "error"
    assert case["outcome"]["message"] == (
        "Removing the background failed: layer 'Background': the engine stopped unexpectedly "
        "(stand-in worker killed); try again")
    assert case["worker_left_running"] is False
    assert case["layers_after"] == case["layers_before"]


def test_engine_file_change_takes_effect(session: KritaSession) -> None:
    # The case after the stand-in engines runs with the restored engine.json, in the same Krita.
    case = session.case("after_engine_faults")
    assert case["outcome"]["status"] == "done", case["outcome"]["message"]


# ----------------------------------------------------------------------------- installer (this machine)
PLUGIN_SOURCE = CHECKOUT / "krita_plugin" / "ai_remove_background"


def load_plugin_module(name: str) -> Any:
    """Import one of the plug-in's modules that use only the standard library, without Krita."""
    spec = importlib.util.spec_from_file_location(f"krita_plugin_{name}", PLUGIN_SOURCE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, with no XDG overrides and no krita executable on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    monkeypatch.setattr(sys, "platform", "linux")
    return home


def engine_for(tmp_path: Path) -> Engine:
    return Engine(python=Path(sys.executable), models_dir=tmp_path / "models")


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def write_kritarc(home: Path, text: str) -> Path:
    kritarc = home / ".config" / "kritarc"
    kritarc.parent.mkdir(parents=True)
    kritarc.write_bytes(text.encode())
    return kritarc


KRITARC_BEFORE = "[General]\nsomething=1\n\n[python]\nenable_other_plugin=true\n\n[Theme]\nname=Dark\n"


def test_install_copies_plugin_and_enables_it(fake_home: Path, tmp_path: Path) -> None:
    kritarc = write_kritarc(fake_home, KRITARC_BEFORE)
    manifest = Manifest(tmp_path / "manifest.json")
    installed = krita_installer.install(engine_for(tmp_path), manifest, required=True)
    data_dir = fake_home / ".local" / "share" / "krita"
    assert installed == [data_dir / "pykrita" / "ai_remove_background"]
    assert (installed[0] / "extension.py").is_file()
    assert (installed[0] / "worker_client.py").is_file()
    assert json.loads((installed[0] / "engine.json").read_text())["python"] == sys.executable
    assert (data_dir / "pykrita" / "ai_remove_background.desktop").is_file()
    assert (data_dir / "actions" / "ai_remove_background.action").is_file()
    assert kritarc.read_text() == KRITARC_BEFORE.replace(
        "enable_other_plugin=true\n", "enable_other_plugin=true\nenable_ai_remove_background=true\n")


def test_uninstall_restores_home_exactly(fake_home: Path, tmp_path: Path) -> None:
    write_kritarc(fake_home, KRITARC_BEFORE)
    before = files_under(fake_home)
    manifest = Manifest(tmp_path / "manifest.json")
    krita_installer.install(engine_for(tmp_path), manifest, required=True)
    removed = krita_installer.uninstall(manifest)
    assert removed == [fake_home / ".local" / "share" / "krita" / "pykrita" / "ai_remove_background"]
    assert files_under(fake_home) == before
    assert not (fake_home / ".local").exists()
    assert "krita" not in manifest.settings


def test_reinstall_then_uninstall_restores_previous_value(fake_home: Path, tmp_path: Path) -> None:
    text = "[python]\nenable_ai_remove_background=false\n"
    kritarc = write_kritarc(fake_home, text)
    manifest = Manifest(tmp_path / "manifest.json")
    krita_installer.install(engine_for(tmp_path), manifest, required=True)
    krita_installer.install(engine_for(tmp_path), manifest, required=True)
    assert kritarc.read_text() == "[python]\nenable_ai_remove_background=true\n"
    krita_installer.uninstall(manifest)
    assert kritarc.read_text() == text


def test_install_keeps_foreign_plugin_folder(fake_home: Path, tmp_path: Path) -> None:
    write_kritarc(fake_home, "")
    foreign = fake_home / ".local" / "share" / "krita" / "pykrita" / "ai_remove_background"
    foreign.mkdir(parents=True)
    (foreign / "mine.py").write_text("print('the user wrote this')\n")
    with pytest.raises(InstallError, match="was not created by this installer"):
        krita_installer.install(engine_for(tmp_path), Manifest(tmp_path / "manifest.json"), required=True)
    assert files_under(foreign) == {"mine.py": b"print('the user wrote this')\n"}


def test_install_without_krita_is_a_note(fake_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert krita_installer.install(engine_for(tmp_path), Manifest(tmp_path / "manifest.json"), required=False) == []
    assert "Krita was not found" in capsys.readouterr().out
    assert list(fake_home.iterdir()) == []


def test_install_without_krita_fails_when_required(fake_home: Path, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="Krita was not found"):
        krita_installer.install(engine_for(tmp_path), Manifest(tmp_path / "manifest.json"), required=True)


def test_install_into_flatpak_too(fake_home: Path, tmp_path: Path) -> None:
    write_kritarc(fake_home, "")
    flatpak = fake_home / ".var" / "app" / "org.kde.krita"
    flatpak.mkdir(parents=True)
    manifest = Manifest(tmp_path / "manifest.json")
    installed = krita_installer.install(engine_for(tmp_path), manifest, required=True)
    assert flatpak / "data" / "krita" / "pykrita" / "ai_remove_background" in installed
    assert "enable_ai_remove_background=true" in (flatpak / "config" / "kritarc").read_text()
    krita_installer.uninstall(manifest)
    assert not (flatpak / "config" / "kritarc").exists()
    assert list(flatpak.iterdir()) == []


def test_locations_on_windows_and_macos(tmp_path: Path) -> None:
    environment = {"APPDATA": str(tmp_path / "Roaming"), "LOCALAPPDATA": str(tmp_path / "Local"), "PATH": ""}
    (windows,) = krita_installer.krita_locations(tmp_path, environment, "win32")
    assert (windows.data_dir, windows.kritarc) == (tmp_path / "Roaming" / "krita", tmp_path / "Local" / "kritarc")
    (macos,) = krita_installer.krita_locations(tmp_path, {"PATH": ""}, "darwin")
    assert macos.data_dir == tmp_path / "Library" / "Application Support" / "krita"
    assert macos.kritarc == tmp_path / "Library" / "Preferences" / "kritarc"
    assert not macos.found


def test_kritarc_edit_keeps_windows_line_endings() -> None:
    text = "[General]\r\na=1\r\n"
    edited, previous, section_added = krita_installer.set_ini_value(text, "python", "enable_x", "true")
    assert edited == "[General]\r\na=1\r\n\r\n[python]\r\nenable_x=true\r\n"
    assert (previous, section_added) == (None, True)
    assert krita_installer.revert_ini_value(edited, "python", "enable_x", previous, section_added) == text


# ----------------------------------------------------------------------------- plug-in helpers without Krita
def test_bgra_to_rgba_swaps_red_and_blue() -> None:
    pixels = load_plugin_module("pixels")
    assert pixels.bgra_to_rgba(bytes([1, 2, 3, 4, 5, 6, 7, 8]), 1) == bytes([3, 2, 1, 4, 7, 6, 5, 8])
    sixteen_bit = struct.pack("<4H", 100, 200, 300, 400)
    assert pixels.bgra_to_rgba(sixteen_bit, 2) == struct.pack("<4H", 300, 200, 100, 400)


@pytest.mark.parametrize("depth, code, opaque", [("U8", "B", 255), ("U16", "H", 65535), ("F16", "e", 1.0),
                                                 ("F32", "f", 1.0)])
def test_scale_alpha_in_every_depth(depth: str, code: str, opaque: float) -> None:
    pixels = load_plugin_module("pixels")
    # Two GRAYA pixels: grey then alpha.
    data = struct.pack(f"=4{code}", opaque, opaque, opaque, opaque)
    size = struct.calcsize(f"={code}")
    layout = pixels.PixelLayout(2 * size, size, depth)
    scaled = struct.unpack(f"=4{code}", pixels.scale_alpha(data, 2, 1, layout, bytes([0, 255])))
    assert scaled == (opaque, 0, opaque, opaque)
    half = struct.unpack(f"=4{code}", pixels.scale_alpha(data, 2, 1, layout, bytes([51, 51])))
    assert half[1] == pytest.approx(opaque * 0.2, rel=1e-3, abs=0.5)
    assert half[0] == opaque


def test_options_fall_back_to_defaults() -> None:
    options = load_plugin_module("options")
    parsed = options.options_from_strings({"grow": "9999", "output": "layer", "refine": "false", "background_color": "red"})
    assert parsed.grow == 0
    assert parsed.output == "layer"
    assert parsed.refine is False
    assert parsed.background_color == "#ffffff"
    assert options.options_from_strings(options.options_to_strings(parsed)) == parsed


def test_lzf_decompress_back_reference() -> None:
    # A literal run of 3 bytes, then a 6-byte copy from 3 bytes back.
    assert lzf_decompress(bytes([2]) + b"abc" + bytes([4 << 5, 2]), 9) == b"abcabcabc"
