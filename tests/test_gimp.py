"""The GIMP 3 plug-in inside real GIMP 3.0, from the editor chroot (tests/editors/chroot.sh).

The plug-in is installed with installer.gimp into a private GIMP configuration folder, and finds
the engine through the engine.json it writes, as on a user's machine. Each batch starts GIMP once
and runs many cases through tests/editors/gimp_driver.py; the asserts are here. Reference masks
come from the engine's CLI run on the very pixels of each layer, which the driver exports as PNG
before running the filter.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from editors.host import CHECKOUT, EditorHost
from editors.trimaps import UNKNOWN, astronaut_trimap, write_astronaut_trimap
from editors.xcf_reader import read_xcf
from PIL import Image

from installer import editors as editor_installers
from installer import gimp as gimp_installer
from installer.common import OWNER_MARKER, Engine, InstallError, Manifest

pytestmark = pytest.mark.gimp

DRIVER = CHECKOUT / "tests" / "editors" / "gimp_driver.py"
INSTALLER = CHECKOUT / "tests" / "editors" / "gimp_install.py"
SAMPLES = CHECKOUT / "samples"
GIMP_BATCH = "gimp-console-3.0 -i --batch-interpreter=python-fu-eval -b - --quit"
# The full GIMP on a private X server: the chroot call has its own /tmp and network namespace,
# so display :99 cannot clash with another run.
GIMP_GUI_BATCH = (
    "Xvfb :99 -screen 0 1280x1024x24 -nolisten tcp -ac >/dev/null 2>&1 & xvfb=$!; "
    "for attempt in $(seq 100); do [ -e /tmp/.X11-unix/X99 ] && break; sleep 0.1; done; "
    "DISPLAY=:99 gimp-3.0 --batch-interpreter=python-fu-eval -b - --quit < {driver}; status=$?; "
    "kill $xvfb; exit $status"
)
CATALOGUE = json.loads((CHECKOUT / "models" / "catalogue.json").read_text(encoding="utf-8"))
# Allowed difference between two masks of the same pixels. GIMP's masks matched the CLI's exactly
# when measured; one level leaves room for rounding in the u16 and float sample conversions.
MASK_TOLERANCE = 1
FAST_MODEL = "u2netp"
MODELS_VARIABLE = "AI_REMOVE_BACKGROUND_MODELS"
LAYER_LIMIT_VARIABLE = "AI_REMOVE_BACKGROUND_MAX_MEGAPIXELS"
LAYER_LIMIT_MEGAPIXELS = 0.2
HANG_TIMEOUT_SECONDS = 3
ORANGE = "#ff8000"


@dataclass
class GimpSession:
    """A private GIMP configuration folder with the plug-in installed, and a folder for outputs."""

    host: EditorHost
    run_dir: str  # path inside the chroot
    gimp_dir: str  # path inside the chroot

    def path(self, chroot_path: str) -> Path:
        return self.host.host_path(chroot_path)

    def run_gimp(self, name: str, cases: list[dict], gui: bool = False) -> dict:
        """Run the driver on `cases` in one GIMP start and return its results.json.

        With `gui`, the full GIMP runs on a private X server, and the driver also builds the
        plug-in's dialog.
        """
        output_dir = f"{self.run_dir}/{name}"
        self.path(output_dir).mkdir()
        job = f"{output_dir}/job.json"
        self.path(job).write_text(json.dumps({"output_dir": output_dir, "cases": cases, "dialog": gui}))
        driver = shlex.quote(str(DRIVER))
        command = GIMP_GUI_BATCH.format(driver=driver) if gui else f"{GIMP_BATCH} < {driver}"
        result = self.host.run(
            ["bash", "-c", command],
            env={"GIMP3_DIRECTORY": self.gimp_dir, "AIRB_GIMP_JOB": job, "AIRB_GIMP_DRIVER": str(DRIVER)},
            timeout=900,
        )
        log = f"exit status {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        assert result.returncode == 0, f"GIMP batch {name!r} failed: {log}"
        results_path = self.path(f"{output_dir}/results.json")
        assert results_path.exists(), f"GIMP batch {name!r} wrote no results: {log}"
        results = json.loads(results_path.read_text())
        results["log"] = log
        results["job"] = {case["name"]: case for case in cases}
        return results

    def cli_masks(
        self, sources: list[str], model: str, options: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the engine's CLI once on several PNGs; return {source path: mask}."""
        options = options or []
        # Options may hold paths, so the folder is named by the model and a counter only.
        output_dir = f"{self.run_dir}/cli-{model}-{len(list(self.path(self.run_dir).iterdir()))}"
        # An existing folder makes -o a folder even for one input.
        self.path(output_dir).mkdir()
        cli = str(Path(self.host.engine_python).parent / "ai-remove-background")
        result = self.host.run(
            [cli, *sources, "--mask", "--model", model, *options, "-o", output_dir], timeout=900
        )
        assert result.returncode == 0, f"the CLI failed:\n{result.stdout}\n{result.stderr}"
        return {source: load_png(self.path(f"{output_dir}/{Path(source).stem}.png")) for source in sources}


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def crop_png(session: GimpSession, source: str, box: list[int]) -> str:
    """Save the box [x, y, width, height] of a PNG as a new PNG and return its path."""
    left, top, width, height = box
    target = source[: -len(".png")] + "-box.png"
    with Image.open(session.path(source)) as image:
        image.crop((left, top, left + width, top + height)).save(session.path(target))
    return target


def write_source_png(session: GimpSession, sample: str) -> str:
    """Convert a sample JPEG to PNG, so GIMP and the CLI read the same pixels (their JPEG decoders differ)."""
    target = f"{session.run_dir}/{Path(sample).stem}.png"
    with Image.open(SAMPLES / sample) as image:
        image.convert("RGB").save(session.path(target))
    return target


@pytest.fixture(scope="module")
def gimp(editor_host: EditorHost, request: pytest.FixtureRequest) -> Iterator[GimpSession]:
    """Install the plug-in into a fresh folder, which is removed afterwards unless a test failed."""
    failures_before = request.session.testsfailed
    run_dir = editor_host.new_run_dir()
    session = GimpSession(editor_host, run_dir, f"{run_dir}/gimp3")
    installed = editor_host.run(
        [
            "python3",
            str(INSTALLER),
            editor_host.engine_python,
            editor_host.models_dir,
            f"{run_dir}/manifest.json",
        ],
        env={"GIMP3_DIRECTORY": session.gimp_dir},
    )
    assert installed.returncode == 0, (
        f"installing the plug-in failed:\n{installed.stdout}\n{installed.stderr}"
    )
    yield session
    if request.session.testsfailed == failures_before:
        shutil.rmtree(session.path(run_dir), ignore_errors=True)


@pytest.fixture(scope="module")
def sources(gimp: GimpSession) -> dict[str, str]:
    return {
        "astronaut": write_source_png(gimp, "astronaut.jpg"),
        "chelsea": write_source_png(gimp, "chelsea.jpg"),
    }


# ---------------------------------------------------------------------------------------------
# Batches: each starts GIMP once
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_run(gimp: GimpSession, sources: dict[str, str]) -> dict:
    """The real photos with the default model (no model argument), and the astronaut with rvm."""
    cases = [
        {"name": "astronaut", "source": sources["astronaut"], "save": True},
        {"name": "chelsea", "source": sources["chelsea"], "save": True},
        {"name": "astronaut rvm", "source": sources["astronaut"], "args": {"model": "rvm"}},
    ]
    return gimp.run_gimp("photos", cases)


def fast(case: dict) -> dict:
    """Use the fast model unless the case names one."""
    case.setdefault("args", {}).setdefault("model", FAST_MODEL)
    return case


@pytest.fixture(scope="module")
def layer_run(gimp: GimpSession, sources: dict[str, str]) -> dict:
    """Layer geometry, image modes and precisions, alpha, existing masks, outputs and refusals."""
    cat, astronaut = sources["chelsea"], sources["astronaut"]
    trimap = f"{gimp.run_dir}/astronaut-trimap.png"
    write_astronaut_trimap(gimp.path(trimap))
    cases = [
        {"name": "offset", "source": cat, "canvas": [600, 420], "offset": [90, 70], "save": True},
        {"name": "negative offset", "source": cat, "canvas": [300, 200], "offset": [-80, -50], "save": True},
        # The fast model finds almost no subject in the grey cat, so this case uses the default one.
        {"name": "grayscale", "source": cat, "mode": "gray", "save": True, "args": {"model": "isnet"}},
        {"name": "indexed", "source": cat, "mode": "indexed", "save": True},
        {"name": "16-bit", "source": cat, "precision": "U16_NON_LINEAR", "save": True},
        {"name": "32-bit float", "source": cat, "precision": "FLOAT_LINEAR", "save": True},
        {"name": "alpha", "source": cat, "alpha": "ramp", "save": True},
        {
            "name": "mask replace",
            "source": cat,
            "existing_mask": "ramp",
            "args": {"existing-mask": "replace"},
        },
        {
            "name": "mask intersect",
            "source": cat,
            "existing_mask": "ramp",
            "args": {"existing-mask": "intersect"},
        },
        {"name": "mask keep", "source": cat, "existing_mask": "ramp", "args": {"existing-mask": "keep"}},
        {
            "name": "mask refine",
            "source": astronaut,
            "existing_mask_file": trimap,
            "args": {"existing-mask": "refine"},
            "cli_options": ["--hint-mask", trimap],
        },
        {
            "name": "output selection",
            "source": cat,
            "canvas": [400, 300],
            "offset": [-40, -30],
            "args": {"output": "selection"},
        },
        {"name": "output new layer", "source": cat, "args": {"output": "new-layer"}, "save": True},
        {
            "name": "output colour",
            "source": cat,
            "args": {"output": "background-colour", "background-colour": ORANGE},
            "save": True,
        },
        {
            "name": "output blur",
            "source": cat,
            "selection": [50, 50, 200, 150],
            "args": {"output": "background-blur", "blur-radius": 8.0, "selection-only": False},
        },
        # The canvas selection x 180-480, y 20-320 covers x 150-450, y 0-300 of the layer at (30, 20):
        # the model sees that box only, as the CLI does on the same box cut out of the layer.
        {
            "name": "selection limit",
            "source": cat,
            "canvas": [500, 340],
            "offset": [30, 20],
            "selection": [180, 20, 300, 300],
            "reference_box": [150, 0, 300, 300],
        },
        {
            "name": "selection misses layer",
            "source": cat,
            "canvas": [800, 600],
            "selection": [600, 400, 100, 100],
            "reference": False,
        },
        {
            "name": "layer group",
            "source": cat,
            "canvas": [500, 340],
            "offset": [25, 15],
            "target": "group",
            "save": True,
        },
        {"name": "text layer", "source": cat, "target": "text", "reference": False},
        {
            "name": "indexed colour",
            "source": cat,
            "mode": "indexed",
            "args": {"output": "background-colour", "background-colour": ORANGE},
        },
        {"name": "group new layer", "source": cat, "target": "group", "args": {"output": "new-layer"}},
        {
            "name": "text new layer",
            "source": cat,
            "target": "text",
            "args": {"output": "new-layer"},
            "reference": False,
        },
        {
            "name": "two layers",
            "source": cat,
            "canvas": [800, 700],
            "second_source": astronaut,
            "second_offset": [200, 150],
            "target": "both layers",
        },
        {"name": "channel", "source": cat, "target": "channel", "export_source": False, "save_around": True},
        {
            "name": "layer mask",
            "source": cat,
            "target": "layer mask",
            "export_source": False,
            "save_around": True,
        },
        {
            "name": "options",
            "source": cat,
            "cli_options": ["--invert", "--grow", "3", "--feather", "2", "--no-refine"],
            "args": {"invert": True, "grow": 3, "feather": 2.0, "refine-edges": False},
        },
        {
            "name": "engine missing",
            "source": cat,
            "engine": {"python": "/nonexistent/bin/python"},
            "save_around": True,
        },
        {
            "name": "model missing",
            "source": cat,
            "engine": {"environment": {MODELS_VARIABLE: "/nonexistent"}},
            "save_around": True,
        },
        # The cat (top, 0.135 megapixels) is processed first and fits the limit; the astronaut
        # (bottom, 0.262 megapixels) does not.
        {
            "name": "second layer fails",
            "source": astronaut,
            "canvas": [600, 600],
            "second_source": cat,
            "second_offset": [60, 40],
            "target": "both layers",
            "engine": {"environment": {LAYER_LIMIT_VARIABLE: str(LAYER_LIMIT_MEGAPIXELS)}},
        },
        {
            "name": "worker hangs",
            "source": cat,
            "engine": {
                "python": gimp.host.stand_in_engine(gimp.run_dir, "hang"),
                "timeout_seconds": HANG_TIMEOUT_SECONDS,
            },
            "save_around": True,
            "watch_worker": True,
            "reference": False,
        },
        {
            "name": "worker killed",
            "source": cat,
            "engine": {"python": gimp.host.stand_in_engine(gimp.run_dir, "killed")},
            "save_around": True,
            "watch_worker": True,
            "reference": False,
        },
        {
            "name": "cancel",
            "source": astronaut,
            "cancel": True,
            "args": {"model": "isnet"},
            "reference": False,
            "save_around": True,
        },
    ]
    return gimp.run_gimp("layers", [fast(case) for case in cases])


@pytest.fixture(scope="module")
def gui_run(gimp: GimpSession, sources: dict[str, str]) -> dict:
    """The full GIMP: undo and redo with Ctrl+Z and Ctrl+Y, and the dialog driven by its shortcuts."""
    cat = sources["chelsea"]
    cases = [
        fast(
            {
                "name": "undo colour background",
                "source": cat,
                "display": True,
                "undo": True,
                "reference": False,
                "existing_mask": "ramp",
                "args": {"output": "background-colour"},
            }
        ),
        fast(
            {
                "name": "undo new layer",
                "source": cat,
                "display": True,
                "undo": True,
                "reference": False,
                "args": {"output": "new-layer"},
            }
        ),
        fast(
            {
                "name": "undo selection",
                "source": cat,
                "display": True,
                "undo": True,
                "reference": False,
                "canvas": [400, 300],
                "offset": [-40, -30],
                "args": {"output": "selection"},
            }
        ),
        # Alt+I ticks "_Invert", Alt+O presses "_OK". The second run must start from these values.
        {
            "name": "dialog invert",
            "source": cat,
            "display": True,
            "cli_options": ["--invert"],
            "dialog_shortcuts": [["Alt_L", "i"], ["Alt_L", "o"]],
        },
        {
            "name": "dialog remembers",
            "source": cat,
            "display": True,
            "cli_options": ["--invert"],
            "dialog_shortcuts": [["Alt_L", "o"]],
        },
        {
            "name": "dialog cancel",
            "source": cat,
            "display": True,
            "dialog_shortcuts": [["Escape"]],
            "reference": False,
        },
    ]
    return gimp.run_gimp("gui", cases, gui=True)


def reference_masks(session: GimpSession, run: dict) -> dict[tuple[str, str], np.ndarray]:
    """Return the CLI's masks of every layer a run exported, keyed by (case name, layer name).

    Each case's model and options are those of its procedure arguments; an interactive case
    uses the default model and names its CLI options itself.
    """
    # Many cases export the same pixels, so each distinct file is computed once per model and options.
    groups: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}
    wanted: list[tuple[str, str, tuple[str, tuple[str, ...]], str]] = []
    for name, result in run["cases"].items():
        case = run["job"][name]
        if not case.get("reference", True):
            continue
        key = (
            case.get("args", {}).get("model", CATALOGUE["default_model"]),
            tuple(case.get("cli_options", [])),
        )
        for layer_name, source in result.get("source_pngs", {}).items():
            if "reference_box" in case:
                source = crop_png(session, source, case["reference_box"])
            content = hashlib.sha256(session.path(source).read_bytes()).hexdigest()
            representative = groups.setdefault(key, {}).setdefault(content, source)
            wanted.append((name, layer_name, key, representative))
    computed: dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]] = {}
    for key, files in groups.items():
        computed[key] = session.cli_masks(list(files.values()), key[0], list(key[1]))
    return {(name, layer_name): computed[key][source] for name, layer_name, key, source in wanted}


@pytest.fixture(scope="module")
def references(gimp: GimpSession, photo_run: dict, layer_run: dict) -> dict[tuple[str, str], np.ndarray]:
    return {**reference_masks(gimp, photo_run), **reference_masks(gimp, layer_run)}


@pytest.fixture(scope="module")
def gui_references(gimp: GimpSession, gui_run: dict) -> dict[tuple[str, str], np.ndarray]:
    return reference_masks(gimp, gui_run)


# ---------------------------------------------------------------------------------------------
# Reading results
# ---------------------------------------------------------------------------------------------


def case_result(run: dict, name: str) -> dict:
    case = run["cases"][name]
    assert "driver_error" not in case, f"the driver failed on {name!r}:\n{case['driver_error']}\n{run['log']}"
    return case


def successful(run: dict, name: str) -> dict:
    case = case_result(run, name)
    assert case["status"] == "success", f"{name!r} returned {case['status']}: {case['message']}\n{run['log']}"
    return case


def layer_entry(case: dict, name: str) -> dict:
    for entry in case["image"]["layers"]:
        if entry["name"] == name:
            return entry
    raise AssertionError(
        f"no layer {name!r} after {case['name']!r}: {[e['name'] for e in case['image']['layers']]}"
    )


def raw_plane(session: GimpSession, path: str, width: int, height: int, channels: int = 1) -> np.ndarray:
    data = np.frombuffer(session.path(path).read_bytes(), dtype=np.uint8)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return data.reshape(shape)


def layer_mask(session: GimpSession, case: dict, name: str = "photo") -> np.ndarray:
    entry = layer_entry(case, name)
    assert entry["mask"] is not None, f"layer {name!r} has no mask after {case['name']!r}"
    return raw_plane(session, entry["mask"], entry["width"], entry["height"])


def layer_pixels(session: GimpSession, case: dict, name: str) -> np.ndarray:
    entry = layer_entry(case, name)
    return raw_plane(session, entry["pixels"], entry["width"], entry["height"], 4)


def selection(session: GimpSession, case: dict) -> np.ndarray | None:
    image = case["image"]
    if image["selection"] is None:
        return None
    return raw_plane(session, image["selection"], image["width"], image["height"])


def assert_masks_close(actual: np.ndarray, expected: np.ndarray, tolerance: int = MASK_TOLERANCE) -> None:
    assert actual.shape == expected.shape, f"mask is {actual.shape}, expected {expected.shape}"
    difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    over = np.argwhere(difference > tolerance)
    assert len(over) == 0, (
        f"{len(over)} of {difference.size} pixels differ by more than {tolerance} "
        f"(max {difference.max()}); first at (row, column) {over[:5].tolist()}"
    )


def assert_has_subject(mask: np.ndarray) -> None:
    """A real photo's mask keeps a subject and removes a background: neither empty nor full."""
    subject = (mask > 127).mean()
    assert 0.05 < subject < 0.95, f"{subject:.1%} of the mask is subject, expected between 5% and 95%"


def place_on_canvas(mask: np.ndarray, offsets: list[int], width: int, height: int) -> np.ndarray:
    """Return the canvas-sized plane that a layer mask at `offsets` covers, 0 elsewhere."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    left, top = offsets
    mask_height, mask_width = mask.shape
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + mask_width, width), min(top + mask_height, height)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def ramp_mask(width: int, height: int) -> np.ndarray:
    """The existing mask the driver paints: 0 at the top row rising to 255 at the bottom row."""
    column = np.round(255 * np.arange(height) / (height - 1)).astype(np.uint8)
    return np.repeat(column[:, None], width, axis=1)


# ---------------------------------------------------------------------------------------------
# Registration and dialog
# ---------------------------------------------------------------------------------------------


def test_menu_entry_under_filters(photo_run):
    assert photo_run["registered"], f"plug-in-ai-remove-background is not registered:\n{photo_run['log']}"
    procedure = photo_run["procedure"]
    assert procedure["menu_paths"] == ["<Image>/Filters"]
    assert procedure["menu_label"] == "AI Remove Background…"
    assert procedure["image_types"] == "*"


def test_procedure_accepts_several_layers(photo_run):
    procedure = photo_run["procedure"]
    flags = procedure["drawable_flags"]
    assert procedure["sensitivity"] & flags["drawable"]
    assert procedure["sensitivity"] & flags["drawables"]


def test_model_choices_match_catalogue(photo_run):
    model = photo_run["procedure"]["arguments"]["model"]
    assert model["choices"] == list(CATALOGUE["models"])
    assert model["default"] == CATALOGUE["default_model"]


def test_argument_defaults(photo_run):
    arguments = photo_run["procedure"]["arguments"]
    assert arguments["output"]["choices"] == [
        "mask",
        "selection",
        "new-layer",
        "background-colour",
        "background-blur",
    ]
    assert arguments["output"]["default"] == "mask"
    assert arguments["existing-mask"]["choices"] == ["replace", "refine", "intersect", "keep"]
    assert arguments["existing-mask"]["default"] == "replace"
    assert arguments["refine-edges"]["default"] is True
    assert arguments["grow"]["default"] == 0
    assert arguments["feather"]["default"] == 0.0
    assert arguments["invert"]["default"] is False
    assert arguments["selection-only"]["default"] is True


def test_dialog_has_widget_per_argument(gui_run):
    dialog = gui_run["dialog"]
    assert "error" not in dialog, f"building the dialog failed:\n{dialog.get('error')}\n{gui_run['log']}"
    assert dialog["title"] == "AI Remove Background"
    missing = [name for name, widget in dialog["widgets"].items() if widget is None]
    assert missing == [], f"no dialog widget for {missing}"
    assert set(dialog["widgets"]) == {
        "model",
        "refine-edges",
        "grow",
        "feather",
        "invert",
        "output",
        "existing-mask",
        "selection-only",
        "background-colour",
        "blur-radius",
    }


def test_dialog_mnemonics_unique(gui_run):
    labels = gui_run["dialog"]["mnemonic_labels"]
    assert "_OK" in labels
    assert "_Cancel" in labels
    letters = [label[label.index("_") + 1].lower() for label in labels]
    repeated = sorted({letter for letter in letters if letters.count(letter) > 1})
    assert repeated == [], f"mnemonics used twice: {repeated} in {labels}"


def test_installed_script_layout(gimp):
    folder = gimp.path(f"{gimp.gimp_dir}/plug-ins/ai-remove-background")
    script = folder / "ai-remove-background.py"
    assert script.stat().st_mode & 0o111, "the script is not executable"
    content = script.read_bytes()
    assert content.startswith(b"#!/usr/bin/env python3\n")
    assert b"\r\n" not in content
    assert (folder / "worker_client.py").is_file()
    assert (folder / "catalogue.json").is_file()
    engine = json.loads((folder / "engine.json").read_text())
    assert engine["python"] == gimp.host.engine_python


# ---------------------------------------------------------------------------------------------
# Real photos
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "astronaut rvm"])
def test_photo_mask_matches_cli(gimp, photo_run, references, name):
    case = successful(photo_run, name)
    mask = layer_mask(gimp, case)
    assert_has_subject(mask)
    assert_masks_close(mask, references[(name, "photo")])


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_saved_xcf_mask_matches_gimp(gimp, photo_run, name):
    case = successful(photo_run, name)
    xcf = read_xcf(gimp.path(case["xcf"]))
    layer = xcf.layer("photo")
    assert layer.mask is not None, "the saved .xcf has no layer mask"
    np.testing.assert_array_equal(xcf.mask_u8(layer.mask), layer_mask(gimp, case))


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_exported_png_alpha_is_mask(gimp, photo_run, name):
    case = successful(photo_run, name)
    png = load_png(gimp.path(case["png"]))
    assert png.shape[2:] == (4,), f"exported PNG has shape {png.shape}, expected RGBA"
    np.testing.assert_array_equal(png[:, :, 3], layer_mask(gimp, case))


def test_mask_output_leaves_no_side_effects(photo_run):
    case = successful(photo_run, "astronaut")
    assert case["image"]["channels"] == [], "a temporary channel was left in the image"
    assert case["image"]["selected_layers"] == ["photo"]
    assert case["image"]["selection"] is None


# ---------------------------------------------------------------------------------------------
# Geometry, modes and precisions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["offset", "negative offset", "grayscale", "indexed", "16-bit", "32-bit float"]
)
def test_layer_mask_matches_cli(gimp, layer_run, references, name):
    case = successful(layer_run, name)
    mask = layer_mask(gimp, case)
    assert_has_subject(mask)
    assert_masks_close(mask, references[(name, "photo")])


@pytest.mark.parametrize("name", ["offset", "negative offset"])
def test_offset_layer_keeps_geometry(gimp, layer_run, name):
    case = successful(layer_run, name)
    entry = layer_entry(case, "photo")
    expected_offsets = {"offset": [90, 70], "negative offset": [-80, -50]}[name]
    assert entry["offsets"] == expected_offsets
    assert (entry["width"], entry["height"]) == (451, 300)
    xcf = read_xcf(gimp.path(case["xcf"]))
    assert list(xcf.layer("photo").offsets) == expected_offsets


@pytest.mark.parametrize("name", ["offset", "negative offset"])
def test_offset_png_alpha_is_mask_on_canvas(gimp, layer_run, name):
    case = successful(layer_run, name)
    image = case["image"]
    expected = place_on_canvas(
        layer_mask(gimp, case), layer_entry(case, "photo")["offsets"], image["width"], image["height"]
    )
    png = load_png(gimp.path(case["png"]))
    np.testing.assert_array_equal(png[:, :, 3], expected)


@pytest.mark.parametrize(
    ("name", "precision"),
    [("offset", 150), ("grayscale", 150), ("indexed", 150), ("16-bit", 250), ("32-bit float", 600)],
)
def test_saved_xcf_mask_in_any_precision(gimp, layer_run, name, precision):
    case = successful(layer_run, name)
    xcf = read_xcf(gimp.path(case["xcf"]))
    assert xcf.precision == precision
    layer = xcf.layer("photo")
    assert layer.mask is not None, f"the saved .xcf of {name!r} has no layer mask"
    np.testing.assert_array_equal(xcf.mask_u8(layer.mask), layer_mask(gimp, case))


def test_image_mode_and_precision_kept(layer_run):
    assert successful(layer_run, "grayscale")["image"]["base_type"] == "gray"
    assert successful(layer_run, "indexed")["image"]["base_type"] == "indexed"
    assert successful(layer_run, "16-bit")["image"]["precision"] == "u16-non-linear"
    assert successful(layer_run, "32-bit float")["image"]["precision"] == "float-linear"


# ---------------------------------------------------------------------------------------------
# Transparency and existing masks
# ---------------------------------------------------------------------------------------------


def test_mask_respects_layer_alpha(gimp, layer_run, references):
    case = successful(layer_run, "alpha")
    mask = layer_mask(gimp, case)
    alpha = layer_pixels(gimp, case, "photo")[:, :, 3]
    assert (mask[alpha == 0] == 0).all(), "the mask keeps fully transparent pixels"
    assert (mask <= alpha.astype(np.int16) + MASK_TOLERANCE).all(), "the mask exceeds the layer's alpha"
    assert_masks_close(mask, references[("alpha", "photo")])


def test_alpha_png_combines_alpha_and_mask(gimp, layer_run):
    case = successful(layer_run, "alpha")
    mask = layer_mask(gimp, case).astype(np.float64)
    alpha = layer_pixels(gimp, case, "photo")[:, :, 3].astype(np.float64)
    png = load_png(gimp.path(case["png"]))
    assert_masks_close(png[:, :, 3], np.round(mask * alpha / 255).astype(np.uint8))


def test_existing_mask_replaced(gimp, layer_run, references):
    case = successful(layer_run, "mask replace")
    assert_masks_close(layer_mask(gimp, case), references[("mask replace", "photo")])


def test_existing_mask_intersected(gimp, layer_run, references):
    case = successful(layer_run, "mask intersect")
    mask = layer_mask(gimp, case)
    reference = references[("mask intersect", "photo")].astype(np.int32)
    old = ramp_mask(mask.shape[1], mask.shape[0]).astype(np.int32)
    assert_masks_close(mask, ((reference * old + 127) // 255).astype(np.uint8))


def test_existing_mask_refined(gimp, layer_run, references):
    case = successful(layer_run, "mask refine")
    mask = layer_mask(gimp, case)
    trimap = astronaut_trimap()
    assert (mask[trimap == 255] == 255).all(), "painted white pixels changed"
    assert (mask[trimap == 0] == 0).all(), "painted black pixels changed"
    band = mask[trimap == UNKNOWN]
    assert ((band > 0) & (band < 255)).mean() > 0.3, "the band between black and white was not solved"
    assert_masks_close(mask, references[("mask refine", "photo")])


def test_existing_mask_kept_result_selected(gimp, layer_run, references):
    case = successful(layer_run, "mask keep")
    mask = layer_mask(gimp, case)
    np.testing.assert_array_equal(mask, ramp_mask(mask.shape[1], mask.shape[0]))
    selected = selection(gimp, case)
    assert selected is not None, "no selection was made"
    assert_masks_close(selected, references[("mask keep", "photo")])


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def test_output_selection_on_canvas(gimp, layer_run, references):
    case = successful(layer_run, "output selection")
    assert layer_entry(case, "photo")["mask"] is None, "the selection output added a layer mask"
    selected = selection(gimp, case)
    assert selected is not None, "no selection was made"
    image = case["image"]
    expected = place_on_canvas(
        references[("output selection", "photo")], [-40, -30], image["width"], image["height"]
    )
    assert_masks_close(selected, expected)
    assert image["channels"] == [], "the temporary channel was left in the image"


def test_output_new_layer_with_transparency(gimp, layer_run, references):
    case = successful(layer_run, "output new layer")
    layers = case["image"]["layers"]
    assert [entry["name"] for entry in layers] == ["photo (cut out)", "photo"]
    original = layer_entry(case, "photo")
    assert original["mask"] is None
    assert original["visible"] is False
    cutout = layer_entry(case, "photo (cut out)")
    assert cutout["mask"] is None
    assert cutout["visible"] is True
    pixels = layer_pixels(gimp, case, "photo (cut out)")
    assert_masks_close(pixels[:, :, 3], references[("output new layer", "photo")])
    subject = pixels[:, :, 3] == 255
    np.testing.assert_array_equal(pixels[subject][:, :3], layer_pixels(gimp, case, "photo")[subject][:, :3])
    assert case["image"]["selected_layers"] == ["photo (cut out)"]


def test_output_colour_background(gimp, layer_run, references):
    case = successful(layer_run, "output colour")
    assert [entry["name"] for entry in case["image"]["layers"]] == ["photo", "photo background"]
    assert_masks_close(layer_mask(gimp, case), references[("output colour", "photo")])
    background = layer_pixels(gimp, case, "photo background")
    assert (background.reshape(-1, 4) == [255, 128, 0, 255]).all(), "the background is not the chosen colour"
    png = load_png(gimp.path(case["png"]))
    assert (png[:, :, 3] == 255).all(), "the composite is not opaque over the new background"
    removed = layer_mask(gimp, case) == 0
    assert (png[removed][:, :3] == [255, 128, 0]).all(), "removed pixels do not show the background colour"
    assert case["image"]["selected_layers"] == ["photo"]


def test_output_blurred_background(gimp, layer_run, references):
    case = successful(layer_run, "output blur")
    assert [entry["name"] for entry in case["image"]["layers"]] == ["photo", "photo background"]
    assert_masks_close(layer_mask(gimp, case), references[("output blur", "photo")])
    original = layer_pixels(gimp, case, "photo").astype(np.float64)
    blurred = layer_pixels(gimp, case, "photo background").astype(np.float64)
    assert blurred.shape == original.shape

    def roughness(pixels: np.ndarray) -> float:
        return float(np.abs(np.diff(pixels[:, :, :3], axis=1)).mean())

    # The blur covers the whole layer, not only the selection that was active.
    for region in (np.s_[60:190, 60:240], np.s_[220:290, 300:440]):
        assert roughness(blurred[region]) < 0.5 * roughness(original[region])
    # GIMP blurs in linear light, which brightens the perceptual mean a little (3 levels here).
    assert abs(blurred[:, :, :3].mean() - original[:, :, :3].mean()) < 6
    assert layer_entry(case, "photo background")["mask"] is None


def test_output_blur_keeps_selection(gimp, layer_run):
    case = successful(layer_run, "output blur")
    selected = selection(gimp, case)
    assert selected is not None, "the selection was lost"
    expected = np.zeros_like(selected)
    expected[50:200, 50:250] = 255
    np.testing.assert_array_equal(selected, expected)


def test_options_reach_engine(gimp, layer_run, references):
    case = successful(layer_run, "options")
    mask = layer_mask(gimp, case)
    assert_masks_close(mask, references[("options", "photo")])


# ---------------------------------------------------------------------------------------------
# Selection, groups, text and several layers
# ---------------------------------------------------------------------------------------------


def test_selection_limits_search(gimp, layer_run, references):
    case = successful(layer_run, "selection limit")
    mask = layer_mask(gimp, case)
    inside = np.zeros(mask.shape, dtype=bool)
    inside[0:300, 150:450] = True
    assert (mask[~inside] == 0).all(), "the mask is not empty outside the selection"
    assert_has_subject(mask[inside])
    assert_masks_close(mask[0:300, 150:450], references[("selection limit", "photo")])
    assert selection(gimp, case) is not None, "the selection was removed"


def test_selection_missing_layer_rejected(layer_run):
    case = case_result(layer_run, "selection misses layer")
    assert case["status"] == "execution-error"
    assert "layer 'photo': the selection does not overlap this layer" in case["message"]
    assert case["after"] == case["before"], "the image changed although the filter failed"


def test_group_gets_mask(gimp, layer_run, references):
    case = successful(layer_run, "layer group")
    entry = layer_entry(case, "group")
    assert entry["type"] == "GroupLayer"
    assert entry["offsets"] == [25, 15]
    mask = layer_mask(gimp, case, "group")
    assert_has_subject(mask)
    assert_masks_close(mask, references[("layer group", "group")])
    assert layer_entry(case, "photo")["mask"] is None
    xcf = read_xcf(gimp.path(case["xcf"]))
    np.testing.assert_array_equal(xcf.mask_u8(xcf.layer("group").mask), mask)


def test_text_layer_stays_text(gimp, layer_run):
    case = successful(layer_run, "text layer")
    entry = layer_entry(case, "Cat")
    assert entry["type"] == "TextLayer"
    mask = layer_mask(gimp, case, "Cat")
    alpha = layer_pixels(gimp, case, "Cat")[:, :, 3]
    assert (mask[alpha == 0] == 0).all(), "the mask keeps pixels outside the letters"


def test_two_layers_each_get_mask(gimp, layer_run, references):
    case = successful(layer_run, "two layers")
    for name in ("photo", "second photo"):
        mask = layer_mask(gimp, case, name)
        assert_has_subject(mask)
        assert_masks_close(mask, references[("two layers", name)])
    assert sorted(case["image"]["selected_layers"]) == ["photo", "second photo"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("channel", "'saved' is a channel, and AI Remove Background works on layers"),
        ("layer mask", "'photo mask' is a layer mask: select the layer 'photo' itself"),
    ],
)
def test_non_layer_drawable_rejected(layer_run, name, message):
    case = case_result(layer_run, name)
    assert case["status"] == "execution-error"
    assert message in case["message"]
    assert case["after"] == case["before"], "the image changed although the filter failed"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("engine missing", "the engine's Python '/nonexistent/bin/python' named in"),
        (
            "model missing",
            "model u2netp is not installed (/nonexistent/u2netp.onnx not found): "
            "run 'python3 install.py --models u2netp' to fetch it",
        ),
    ],
)
def test_engine_errors_reported(layer_run, name, message):
    case = case_result(layer_run, name)
    assert case["status"] == "execution-error"
    assert message in case["message"]
    assert case["after"] == case["before"], "the image changed although the filter failed"


def test_failing_layer_leaves_finished_layers_done(gimp, layer_run, references):
    case = case_result(layer_run, "second layer fails")
    assert case["status"] == "execution-error"
    assert case["message"] == (
        "AI Remove Background: layer 'photo': layer is 512 x 512 (0.262 megapixels), over the limit of "
        f"{LAYER_LIMIT_MEGAPIXELS:g}: scale it down, or raise the limit with {LAYER_LIMIT_VARIABLE} in the "
        "environment of the plug-in's engine.json. Finished 1 of 2 layers ('second photo'); Edit > Undo "
        "removes their result. Left unchanged: 'photo'."
    )
    finished = layer_mask(gimp, case, "second photo")
    assert_has_subject(finished)
    assert_masks_close(finished, references[("second layer fails", "second photo")])
    assert layer_entry(case, "photo")["mask"] is None, "the failed layer got a mask"
    # The layer has no alpha channel, so its PNG is RGB and the driver reads it as opaque RGBA.
    source = load_png(gimp.path(case["source_pngs"]["photo"]))
    pixels = layer_pixels(gimp, case, "photo")
    assert np.array_equal(pixels[..., :3], source), "the failed layer's colours changed"
    assert (pixels[..., 3] == 255).all(), "the failed layer's alpha changed"


def assert_saved_file_unchanged(session: GimpSession, case: dict) -> None:
    """The image saved after the run is byte for byte the image saved before it."""
    before = session.path(case["xcf_before"]).read_bytes()
    after = session.path(case["xcf_after"]).read_bytes()
    assert len(before) > 1000, f"{case['xcf_before']} is only {len(before)} bytes"
    assert after == before, f"{case['xcf_after']} differs from {case['xcf_before']}"


@pytest.mark.parametrize(
    "name", ["channel", "layer mask", "engine missing", "model missing", "worker hangs", "worker killed", "cancel"]
)
def test_failed_run_saves_identical_file(gimp, layer_run, name):
    assert_saved_file_unchanged(gimp, case_result(layer_run, name))


def test_hung_worker_times_out(layer_run):
    case = case_result(layer_run, "worker hangs")
    assert case["status"] == "execution-error"
    assert (
        f"layer 'photo': the engine sent nothing for {HANG_TIMEOUT_SECONDS} s and was stopped: try again; "
        "for very large layers, raise timeout_seconds in"
    ) in case["message"]
    assert case["worker_seen"], "the stand-in engine never started"
    assert case["worker_exited"], "the hung engine kept running after the timeout"
    assert case["after"] == case["before"], "the image changed although the engine hung"


def test_killed_worker_reported(layer_run):
    case = case_result(layer_run, "worker killed")
    assert case["status"] == "execution-error"
    assert (
        "layer 'photo': the engine stopped unexpectedly (stand-in worker killed); try again" in case["message"]
    )
    assert case["worker_seen"], "the stand-in engine never started"
    assert case["worker_exited"], "the stand-in engine kept running"
    assert case["after"] == case["before"], "the image changed although the engine was killed"


# ---------------------------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------------------------


def test_cancel_leaves_image_unchanged(layer_run):
    case = case_result(layer_run, "cancel")
    assert case["cancel"].get("killed"), f"the plug-in was not killed: {case['cancel']}\n{layer_run['log']}"
    assert case["status"] != "success"
    assert case["after"] == case["before"], "the image changed although the filter was cancelled"


def test_cancel_stops_worker(layer_run):
    case = case_result(layer_run, "cancel")
    assert case["cancel"]["plugin_group_differs_from_gimp"], "the plug-in shares GIMP's process group"
    assert case["cancel"]["worker_group_is_plugin_group"], "the worker is outside the plug-in's process group"
    assert case["worker_exited"], "the worker kept running after the plug-in was killed"


# ---------------------------------------------------------------------------------------------
# The full GIMP: undo and the dialog
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["undo colour background", "undo new layer", "undo selection"])
def test_undo_restores_image(gui_run, name):
    case = successful(gui_run, name)
    assert case["after"] != case["before"], "the filter changed nothing"
    assert case["undo_restored"], "one Ctrl+Z did not restore the image as it was before the filter"


@pytest.mark.parametrize("name", ["undo colour background", "undo new layer", "undo selection"])
def test_redo_repeats_result(gui_run, name):
    case = successful(gui_run, name)
    assert case["redo_restored"], "Ctrl+Y did not bring back the filter's result"


def test_dialog_ok_runs_with_changed_option(gimp, gui_run, gui_references):
    case = successful(gui_run, "dialog invert")
    assert case["dialog"].get("pressed"), f"the dialog never appeared: {case['dialog']}"
    assert_masks_close(layer_mask(gimp, case), gui_references[("dialog invert", "photo")])


def test_dialog_remembers_last_values(gimp, gui_run, gui_references):
    case = successful(gui_run, "dialog remembers")
    assert case["dialog"].get("pressed"), f"the dialog never appeared: {case['dialog']}"
    assert_masks_close(layer_mask(gimp, case), gui_references[("dialog remembers", "photo")])


def test_dialog_cancel_changes_nothing(gui_run):
    case = case_result(gui_run, "dialog cancel")
    assert case["dialog"].get("pressed"), f"the dialog never appeared: {case['dialog']}"
    assert case["status"] == "cancel"
    assert case["after"] == case["before"], "the image changed although the dialog was cancelled"


# ---------------------------------------------------------------------------------------------
# installer/gimp.py, on folders of a fake home (no GIMP needed)
# ---------------------------------------------------------------------------------------------

PLUGIN_FOLDER = Path("plug-ins") / "ai-remove-background"


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIMP3_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    return home


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(python=tmp_path / "venv" / "bin" / "python", models_dir=tmp_path / "models")


def test_installs_into_gimp3_directory(fake_home, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    manifest = Manifest(tmp_path / "manifest.json")
    installed = gimp_installer.install(engine, manifest, required=False)
    target = tmp_path / "gimp3" / PLUGIN_FOLDER
    assert installed == [target]
    script = target / "ai-remove-background.py"
    assert script.stat().st_mode & 0o111, "the script is not executable"
    assert script.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert (target / "worker_client.py").is_file()
    assert (target / OWNER_MARKER).is_file()
    catalogue = json.loads((target / "catalogue.json").read_text())
    assert list(catalogue["models"]) == list(CATALOGUE["models"])
    assert json.loads((target / "engine.json").read_text())["python"] == str(engine.python)
    assert str(target) in manifest.created
    assert manifest.settings[gimp_installer.MANIFEST_KEY] == [str(target)]


def test_reinstall_replaces_own_folder(fake_home, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    manifest = Manifest(tmp_path / "manifest.json")
    gimp_installer.install(engine, manifest, required=False)
    stale = tmp_path / "gimp3" / PLUGIN_FOLDER / "stale.txt"
    stale.write_text("left over from an older version")
    installed = gimp_installer.install(engine, manifest, required=False)
    assert installed == [tmp_path / "gimp3" / PLUGIN_FOLDER]
    assert not stale.exists()
    assert manifest.settings[gimp_installer.MANIFEST_KEY] == [str(installed[0])]


def test_foreign_plugin_folder_kept(fake_home, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    foreign = tmp_path / "gimp3" / PLUGIN_FOLDER
    foreign.mkdir(parents=True)
    (foreign / "ai-remove-background.py").write_text("# the user's own script\n")
    with pytest.raises(InstallError, match="was not created by this installer"):
        gimp_installer.install(engine, Manifest(tmp_path / "manifest.json"), required=False)
    assert (foreign / "ai-remove-background.py").read_text() == "# the user's own script\n"


def test_missing_gimp_skipped_with_note(fake_home, engine, tmp_path, capsys):
    installed = gimp_installer.install(engine, Manifest(tmp_path / "manifest.json"), required=False)
    assert installed == []
    assert "GIMP 3 not found" in capsys.readouterr().out
    assert not (fake_home / ".config").exists()


def test_missing_gimp_required_creates_default(fake_home, engine, tmp_path):
    installed = gimp_installer.install(engine, Manifest(tmp_path / "manifest.json"), required=True)
    assert installed == [fake_home / ".config" / "GIMP" / "3.0" / PLUGIN_FOLDER]
    assert (installed[0] / "ai-remove-background.py").is_file()


def test_flatpak_and_snap_folders(fake_home, engine, tmp_path):
    flatpak = fake_home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    snap = fake_home / "snap" / "gimp" / "current" / ".config" / "GIMP" / "3.0"
    flatpak.mkdir(parents=True)
    snap.mkdir(parents=True)
    installed = gimp_installer.install(engine, Manifest(tmp_path / "manifest.json"), required=False)
    assert installed == [flatpak / PLUGIN_FOLDER, snap / PLUGIN_FOLDER]
    assert not (fake_home / ".config").exists()


def test_xdg_config_home_honoured(fake_home, engine, tmp_path, monkeypatch):
    config_home = tmp_path / "xdg"
    (config_home / "GIMP" / "3.0").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    installed = gimp_installer.install(engine, Manifest(tmp_path / "manifest.json"), required=False)
    assert installed == [config_home / "GIMP" / "3.0" / PLUGIN_FOLDER]


def test_windows_and_macos_folders(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    assert gimp_installer.configuration_folders() == [tmp_path / "Roaming" / "GIMP" / "3.0"]
    monkeypatch.setattr(sys, "platform", "darwin")
    assert gimp_installer.configuration_folders() == [
        fake_home / "Library" / "Application Support" / "GIMP" / "3.0"
    ]


def test_uninstall_removes_only_installed(fake_home, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    manifest = Manifest(tmp_path / "manifest.json")
    [target] = gimp_installer.install(engine, manifest, required=False)
    other_plugin = tmp_path / "gimp3" / "plug-ins" / "someone-elses-plugin"
    other_plugin.mkdir()
    removed = gimp_installer.uninstall(manifest)
    assert removed == [target]
    assert not target.exists()
    assert other_plugin.is_dir()
    assert str(target) not in manifest.created
    assert manifest.settings[gimp_installer.MANIFEST_KEY] == []


def test_uninstall_keeps_folder_without_marker(fake_home, engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    manifest = Manifest(tmp_path / "manifest.json")
    [target] = gimp_installer.install(engine, manifest, required=False)
    (target / OWNER_MARKER).unlink()
    assert gimp_installer.uninstall(manifest) == []
    assert target.is_dir()
    assert f"left in place (not created by install.py): {target}" in capsys.readouterr().out


def test_crlf_script_rewritten_with_lf(tmp_path):
    script = tmp_path / "ai-remove-background.py"
    script.write_bytes(b"#!/usr/bin/env python3\r\nprint('hi')\r\n")
    gimp_installer.normalise_line_endings(script)
    assert script.read_bytes() == b"#!/usr/bin/env python3\nprint('hi')\n"


def test_editor_dispatch_installs_gimp(fake_home, engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "gimp3"))
    editor_installers.install_all(engine, Manifest(tmp_path / "manifest.json"), ["gimp"])
    assert f"- gimp plug-in installed in {tmp_path / 'gimp3' / PLUGIN_FOLDER}" in capsys.readouterr().out


def test_indexed_colour_background(gimp, layer_run, references):
    case = successful(layer_run, "indexed colour")
    assert [entry["name"] for entry in case["image"]["layers"]] == ["photo", "photo background"]
    assert case["image"]["base_type"] == "indexed"
    assert_masks_close(layer_mask(gimp, case), references[("indexed colour", "photo")])
    background = layer_pixels(gimp, case, "photo background").reshape(-1, 4)
    assert len(np.unique(background, axis=0)) == 1, "the background layer is not one colour"


def test_group_new_layer_is_merged(gimp, layer_run, references):
    case = successful(layer_run, "group new layer")
    cutout = layer_entry(case, "group (cut out)")
    assert cutout["type"] == "Layer"
    assert cutout["parent"] is None
    assert layer_entry(case, "group")["visible"] is False
    alpha = layer_pixels(gimp, case, "group (cut out)")[:, :, 3]
    assert_masks_close(alpha, references[("group new layer", "group")])


def test_text_new_layer(gimp, layer_run):
    case = successful(layer_run, "text new layer")
    assert layer_entry(case, "Cat")["type"] == "TextLayer"
    cutout = layer_pixels(gimp, case, "Cat (cut out)")
    text = layer_pixels(gimp, case, "Cat")
    assert (cutout[:, :, 3] <= text[:, :, 3]).all(), "the cut-out is more opaque than the text"
