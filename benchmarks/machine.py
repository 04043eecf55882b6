"""Describe the machine and software a benchmark ran on, for the results page."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("onnxruntime", "numpy", "pillow", "scipy")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, object]:
    """Return cores, CPU model, RAM, OS, Python and the versions of the engine's main packages."""
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "cores": cores,
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def describe_markdown(info: dict[str, object]) -> str:
    """Format CPU, cores, RAM and software versions as one line for the page."""
    memory = info.get("memory_gib")
    memory_text = f"{memory:.0f} GiB RAM" if isinstance(memory, float) else "RAM unknown"
    packages = info.get("packages", {})
    assert isinstance(packages, dict)
    versions = ", ".join(f"{name} {version}" for name, version in packages.items())
    return (f"{info['cpu_model']}, {info['usable_cores']} of {info['cores']} cores usable, "
            f"{memory_text}; {info['os']}; Python {info['python']}; {versions}")
