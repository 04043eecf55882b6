"""Run rembg offline, inside rembg's own Python environment (not the engine's).

Usage, with U2NET_HOME pointing at a folder that contains the model files:
  python rembg_runner.py check MODEL        print JSON: rembg version, pinned and actual md5
  python rembg_runner.py masks < JOBS.json  write the alpha of rembg's cutout for each image
  python rembg_runner.py cli ARGS...        run rembg's command line, e.g. `cli i -m u2netp IN OUT`

This file imports nothing from the benchmarks package, because it runs in another virtual
environment. Every network connection is blocked before rembg is imported, so a model that is
not found locally fails instead of being downloaded.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import socket
import sys
import time


class NetworkBlockedError(OSError):
    pass


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise NetworkBlockedError("network access is disabled for rembg in the benchmarks: "
                              "the model must be found in U2NET_HOME")


def block_network() -> None:
    """Make every outgoing connection and name lookup in this process fail."""
    socket.socket.connect = _refuse_network  # type: ignore[method-assign]
    socket.socket.connect_ex = _refuse_network  # type: ignore[method-assign]
    socket.create_connection = _refuse_network  # type: ignore[assignment]
    socket.getaddrinfo = _refuse_network  # type: ignore[assignment]


def md5_of_file(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def session_class(model: str) -> type:
    from rembg.sessions import sessions_class

    for candidate in sessions_class:
        if candidate.name() == model:
            return candidate
    raise SystemExit(f"rembg {version()} has no model named {model!r}")


def version() -> str:
    from importlib.metadata import version as package_version

    return package_version("rembg")


def check(model: str) -> int:
    """Print the model's local path and digests as JSON; exit 1 if rembg would not use a local file."""
    home = os.environ.get("U2NET_HOME")
    if not home:
        print("U2NET_HOME is not set: point it at the folder with the model files", file=sys.stderr)
        return 1
    cls = session_class(model)
    file_name = f"{model}.onnx"
    resolver = getattr(cls, "resolve_existing", None)
    local_path = resolver(file_name) if resolver is not None else None
    if local_path is None:
        candidate = os.path.join(home, file_name)
        local_path = candidate if os.path.exists(candidate) else None
    pinned = re.findall(r"md5:([0-9a-f]{32})", inspect.getsource(cls.download_models))
    report = {
        "rembg_version": version(),
        "model": model,
        "path": local_path,
        "pinned_md5": pinned[0] if pinned else None,
        "file_md5": md5_of_file(local_path) if local_path else None,
    }
    print(json.dumps(report))
    if local_path is None:
        print(f"rembg does not find {file_name} in {home}", file=sys.stderr)
        return 1
    return 0


def masks() -> int:
    """Read {"model", "alpha_matting", "jobs": [{"image", "output"}]} from stdin; write alpha PNGs."""
    from PIL import Image
    from rembg import new_session, remove

    request = json.load(sys.stdin)
    session = new_session(request["model"])
    alpha_matting = bool(request.get("alpha_matting", False))
    for index, job in enumerate(request["jobs"], start=1):
        started = time.perf_counter()
        with Image.open(job["image"]) as image:
            image.load()
            cutout = remove(image, session=session, alpha_matting=alpha_matting)
        alpha = cutout.convert("RGBA").getchannel("A")
        temporary = job["output"] + ".tmp.png"
        alpha.save(temporary)
        os.replace(temporary, job["output"])
        print(f"rembg {index}/{len(request['jobs'])} {job['image']}: {time.perf_counter() - started:.2f} s",
              file=sys.stderr)
    return 0


def cli(arguments: list[str]) -> int:
    """Run rembg's own command line with `arguments`, as its `rembg` entry point does."""
    sys.argv = ["rembg", *arguments]
    from rembg.cli import main

    main()  # click exits the process itself
    return 0


def main() -> int:
    block_network()
    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "masks", "cli"):
        print(__doc__, file=sys.stderr)
        return 2
    mode = sys.argv[1]
    if mode == "check":
        if len(sys.argv) != 3:
            print("usage: rembg_runner.py check MODEL", file=sys.stderr)
            return 2
        return check(sys.argv[2])
    if mode == "masks":
        return masks()
    return cli(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
