"""Run real GIMP 3.0 and Krita 5.2 from the cached Debian 13 chroot that chroot.sh builds.

The checkout is bind-mounted at its own path inside the chroot. The engine's environment is
created inside the chroot by the project's own install.py, so the plug-ins find the engine
exactly as they would on a user's machine, through the engine.json that install.py writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
CHROOT_SCRIPT = CHECKOUT / "tests" / "editors" / "chroot.sh"
# Everything a test run creates inside the chroot lives under this folder (a path inside the chroot).
RUNS_DIR_IN_CHROOT = "/var/tmp/ai-remove-background-tests"
ENGINE_DIR_IN_CHROOT = "/opt/ai-remove-background"
# pip inside the chroot trusts the host's certificate authorities, which may include a local
# proxy's own authority that update-ca-certificates added on the host only.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_BUNDLE_IN_CHROOT = ENGINE_DIR_IN_CHROOT + "/host-ca-certificates.crt"
# Stand-in workers that read one request, then hang or die. Their last line is what each does.
STAND_IN_WORKER = """import json, os, signal, struct, sys, time
length = struct.unpack(">I", sys.stdin.buffer.read(4))[0]
header = json.loads(sys.stdin.buffer.read(length))
sys.stdin.buffer.read(header.get("payload_bytes", 0))
"""
STAND_IN_ENDINGS = {
    "hang": "time.sleep(600)\n",
    "killed": "print('stand-in worker killed', file=sys.stderr, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n",
}


@dataclass
class EditorHost:
    root: Path
    engine_python: str  # path inside the chroot
    models_dir: str  # host path, bind-mounted at the same path

    def host_path(self, chroot_path: str) -> Path:
        return self.root / chroot_path.lstrip("/")

    def new_run_dir(self) -> str:
        """Return a fresh folder (path inside the chroot) for one test's files."""
        base = self.host_path(RUNS_DIR_IN_CHROOT)
        base.mkdir(parents=True, exist_ok=True)
        host_dir = Path(tempfile.mkdtemp(dir=base))
        host_dir.chmod(0o755)
        return RUNS_DIR_IN_CHROOT + "/" + host_dir.name

    def stand_in_engine(self, run_dir: str, ending: str) -> str:
        """Write a stand-in for the engine's Python whose worker hangs or is killed (`ending`).

        Returns its path inside the chroot. Its command line keeps the worker's module name, so
        a test can check that it is gone.
        """
        script = f"{run_dir}/{ending}_worker.py"
        self.host_path(script).write_text(STAND_IN_WORKER + STAND_IN_ENDINGS[ending])
        python = f"{run_dir}/{ending}-python"
        self.host_path(python).write_text(f'#!/bin/sh\nexec python3 {script} "$@"\n')
        self.host_path(python).chmod(0o755)
        return python

    def run(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        timeout: float = 300,
        net: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the chroot, with the checkout and models folder bind-mounted."""
        command = [str(CHROOT_SCRIPT), "run"] + (["--net"] if net else [])
        command += ["env"] + [f"{key}={value}" for key, value in (env or {}).items()] + argv
        host_env = dict(os.environ, AIRB_CHROOT=str(self.root), AIRB_BIND=f"{CHECKOUT}:{self.models_dir}")
        return subprocess.run(command, env=host_env, capture_output=True, text=True, timeout=timeout)


def editor_unavailable_reason() -> str | None:
    """Return why the editors cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the editor chroot needs root (debootstrap, unshare, chroot)"
    for tool in ("unshare", "chroot", "flock"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip outside CI; in CI a missing editor is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"real editors required in CI: {reason}")
    pytest.skip(reason)


def _engine_key() -> str:
    # The environment contains an editable install of this checkout, so its path is part of the key.
    digest = hashlib.sha256(str(CHECKOUT).encode())
    for name in ("requirements.txt", "requirements-test.txt", "pyproject.toml", "install.py"):
        digest.update((CHECKOUT / name).read_bytes())
    return digest.hexdigest()[:16]


def prepare_host() -> EditorHost:
    """Build or reuse the chroot, then create or reuse the engine's environment inside it."""
    reason = editor_unavailable_reason()
    if reason:
        skip_or_fail(reason)
    built = subprocess.run([str(CHROOT_SCRIPT), "build"], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        skip_or_fail(f"building the editor chroot failed: {built.stderr.strip()[-2000:]}")
    root = Path(built.stdout.strip().splitlines()[-1])
    models_dir = os.environ.get("AI_REMOVE_BACKGROUND_MODELS", str(CHECKOUT / "models" / "files"))
    host = EditorHost(root=root, engine_python="", models_dir=models_dir)

    venv = f"{ENGINE_DIR_IN_CHROOT}/venv-{_engine_key()}"
    host.engine_python = f"{venv}/bin/python"
    lock_path = root.parent / (root.name + ".engine.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready_marker = host.host_path(venv) / ".ready"
        if not ready_marker.exists():
            install_env = {}
            if HOST_CA_BUNDLE.is_file():
                bundle = host.host_path(CA_BUNDLE_IN_CHROOT)
                bundle.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(HOST_CA_BUNDLE, bundle)
                install_env["PIP_CERT"] = CA_BUNDLE_IN_CHROOT
            result = host.run(
                ["python3", str(CHECKOUT / "install.py"), "--venv", venv, "--models-dir", models_dir,
                 "--no-models", "--no-editors"],
                env=install_env,
                net=True,
                timeout=1800,
            )
            if result.returncode != 0:
                pytest.fail(f"install.py inside the editor chroot failed:\n{result.stdout}\n{result.stderr}")
            ready_marker.write_text("ok\n")
    return host
