"""Find rembg, give it our model files under the names it expects, and run it offline.

rembg lives in its own virtual environment (default: .venv-rembg in the checkout), never in
the engine's. It looks for a model as U2NET_HOME/<name>.onnx, so each run gets a temporary
U2NET_HOME holding symbolic links to the engine's model files. A model is compared only when
its file has exactly the md5 that rembg pins for that name, so both tools run the same weights.
Today that is u2netp alone: rembg's ISNet is an fp32 export that is not obtainable here, and
the engine's ISNet is a different (fp16) file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ai_remove_background.catalogue import get_model

CHECKOUT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().with_name("rembg_runner.py")
DEFAULT_REMBG_VENV = CHECKOUT / ".venv-rembg"
# Engine model name -> rembg model name, for the models whose weights rembg also uses.
SHARED_MODELS = {"u2netp": "u2netp"}
INSTALL_COMMAND = 'python3 -m venv .venv-rembg && .venv-rembg/bin/pip install "rembg[cpu,cli]"'


@dataclass
class RembgEnvironment:
    python: Path
    home: Path  # the temporary U2NET_HOME
    version: str
    models: dict[str, str] = field(default_factory=dict)  # engine name -> rembg name, digests checked
    notes: list[str] = field(default_factory=list)

    def variables(self) -> dict[str, str]:
        """Build the environment of a rembg process: our U2NET_HOME, no checksum bypass, hubs offline."""
        variables = dict(os.environ)
        variables.pop("MODEL_CHECKSUM_DISABLED", None)
        variables.pop("REMBG_HOME", None)
        variables["U2NET_HOME"] = str(self.home)
        variables["HF_HUB_OFFLINE"] = "1"
        return variables

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def runner_command(self, *arguments: str) -> list[str]:
        return [str(self.python), str(RUNNER), *arguments]


def _python_has_rembg(python: Path) -> bool:
    try:
        completed = subprocess.run([str(python), "-c", "import importlib.util, sys; "
                                    "sys.exit(importlib.util.find_spec('rembg') is None)"],
                                   capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def find_rembg_python(explicit: Path | None = None) -> Path | None:
    """Return a Python that can import rembg: `explicit`, .venv-rembg, or this interpreter."""
    candidates = [explicit] if explicit is not None else [DEFAULT_REMBG_VENV / "bin" / "python", Path(sys.executable)]
    for candidate in candidates:
        if candidate.exists() and _python_has_rembg(candidate):
            return candidate
    return None


def prepare(explicit_python: Path | None = None) -> tuple[RembgEnvironment | None, str]:
    """Set up rembg for our shared models; return (environment or None, a one-line status)."""
    python = find_rembg_python(explicit_python)
    if python is None:
        where = explicit_python or DEFAULT_REMBG_VENV
        return None, f"rembg not found ({where} cannot import it): install it with {INSTALL_COMMAND}"
    home = Path(tempfile.mkdtemp(prefix="rembg-home-"))
    environment = RembgEnvironment(python=python, home=home, version="unknown")
    for engine_name, rembg_name in SHARED_MODELS.items():
        spec = get_model(engine_name)
        if not spec.path.is_file():
            environment.notes.append(f"{engine_name}: not installed at {spec.path}, so rembg is not compared on it")
            continue
        (home / f"{rembg_name}.onnx").symlink_to(spec.path.resolve())
        completed = subprocess.run(environment.runner_command("check", rembg_name), capture_output=True, text=True,
                                   env=environment.variables(), timeout=300)
        if completed.returncode != 0:
            environment.notes.append(f"{engine_name}: rembg check failed: {completed.stderr.strip()[-300:]}")
            continue
        report = json.loads(completed.stdout)
        environment.version = report["rembg_version"]
        if report["pinned_md5"] is None or report["pinned_md5"] != report["file_md5"]:
            environment.notes.append(f"{engine_name}: md5 {report['file_md5']} differs from rembg's pinned "
                                     f"{report['pinned_md5']}, so the weights are not the same and it is skipped")
            continue
        environment.models[engine_name] = rembg_name
    shown = python.relative_to(CHECKOUT) if python.is_relative_to(CHECKOUT) else python
    status = (f"rembg {environment.version} at {shown}; same weights: "
              f"{', '.join(environment.models) or 'none'}")
    return environment, status


def run_masks(environment: RembgEnvironment, model: str, alpha_matting: bool,
              jobs: list[tuple[Path, Path]]) -> None:
    """Write the alpha channel of rembg's cutout of each (image, output PNG) pair."""
    if not jobs:
        return
    request = {"model": environment.models[model], "alpha_matting": alpha_matting,
               "jobs": [{"image": str(image), "output": str(output)} for image, output in jobs]}
    # rembg's per-image progress goes straight to our stderr.
    completed = subprocess.run(environment.runner_command("masks"), input=json.dumps(request), text=True,
                               env=environment.variables(), stdout=subprocess.DEVNULL)
    if completed.returncode != 0:
        raise RuntimeError(f"rembg failed on model {model} with exit status {completed.returncode}: "
                           "see its messages above")
