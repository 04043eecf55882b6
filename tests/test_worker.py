"""Tests of the editors' worker process and its client, with the real engine and u2netp model.

Every test that talks to a process bounds the wait with a timeout, so a worker that hangs
fails the test instead of stopping the suite.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ai_remove_background.catalogue import get_model, models_dir
from installed_models import require_models
from ai_remove_background.worker import MAX_MEGAPIXELS_VARIABLE, serve
from ai_remove_background.worker_client import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_HEADER_BYTES,
    WorkerClient,
    WorkerError,
    encode_frame,
    read_frame,
)

CHECKOUT = Path(__file__).resolve().parent.parent
ASTRONAUT = CHECKOUT / "samples" / "astronaut.jpg"
WORKER_COMMAND = [sys.executable, "-m", "ai_remove_background.worker"]
PROCESS_TIMEOUT_SECONDS = 300
REPLY_TYPES = {"pong", "bye", "progress", "result", "error"}
ERROR_CODES = {"bad_request", "protocol", "model_missing", "model_invalid", "too_large", "internal"}

# The synthetic layer: a bright disc (the subject) on a dark background.
WIDTH, HEIGHT = 128, 96
ROWS, COLUMNS = np.mgrid[:HEIGHT, :WIDTH]
DISTANCE = np.hypot(COLUMNS - 64, ROWS - 48)
DISC = DISTANCE < 28
INNER = DISTANCE < 22
OUTER = DISTANCE > 36
# Layers with alpha are transparent left of this column, which cuts through the disc.
TRANSPARENT = COLUMNS < 50


@pytest.fixture(scope="module", autouse=True)
def models_installed() -> None:
    require_models("u2netp")


@pytest.fixture(scope="module")
def client() -> Any:
    worker = WorkerClient(sys.executable, env=dict(os.environ), timeout_seconds=PROCESS_TIMEOUT_SECONDS)
    yield worker
    worker.close()


def disc_samples(channels: int) -> np.ndarray:
    """8-bit samples of the disc layer; alpha, if any, 0 in the transparent part."""
    grey = np.where(DISC, 230, 20).astype(np.uint8)
    colour = [grey] if channels in (1, 2) else [grey, grey, grey]
    planes = colour + ([np.where(TRANSPARENT, 0, 255).astype(np.uint8)] if channels in (2, 4) else [])
    return np.dstack(planes)


def encode_samples(samples: np.ndarray, sample: str) -> bytes:
    if sample == "u8":
        return samples.tobytes()
    if sample == "u16":
        return (samples.astype("<u2") * 257).tobytes()
    return (samples.astype("<f4") / 255.0).tobytes()


def worker_mask(client: WorkerClient, samples: np.ndarray, sample: str = "u8", **planes: bytes) -> np.ndarray:
    height, width, channels = samples.shape
    reply, mask = client.remove_background(width, height, channels, sample, encode_samples(samples, sample),
                                           options={"model": "u2netp"}, **planes)
    assert reply["type"] == "result"
    assert len(mask) == width * height
    return np.frombuffer(mask, dtype=np.uint8).reshape(height, width)


def remove_background_header(**changes: Any) -> dict[str, Any]:
    """A valid request header for a 4 x 3 grey u8 layer, with `changes` applied."""
    header = {"op": "remove_background", "id": 7, "width": 4, "height": 3, "channels": 1, "sample": "u8",
              "options": {"model": "u2netp"}}
    header.update(changes)
    return header


def test_ping_lists_models(client: WorkerClient) -> None:
    reply, payload = client.request({"op": "ping", "id": "p"})

    assert reply["type"] == "pong"
    assert reply["id"] == "p"
    assert "u2netp" in reply["models"]
    assert reply["default_model"] == "isnet"
    assert "CPUExecutionProvider" in reply["providers"]
    assert payload == b""


def test_mask_matches_cli(client: WorkerClient, tmp_path: Path) -> None:
    with Image.open(ASTRONAUT) as image:
        rgb = np.asarray(image.convert("RGB"))
    result = subprocess.run([sys.executable, "-m", "ai_remove_background.cli", str(ASTRONAUT), "--model", "u2netp",
                             "--mask", "-o", str(tmp_path / "mask.png")],
                            capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "mask.png") as image:
        cli_mask = np.asarray(image).astype(int)

    mask = worker_mask(client, rgb)

    assert mask.shape == (512, 512)
    assert np.abs(mask.astype(int) - cli_mask).max() <= 1


@pytest.fixture(scope="module")
def u8_masks(client: WorkerClient) -> dict[int, np.ndarray]:
    return {channels: worker_mask(client, disc_samples(channels)) for channels in (1, 2, 3, 4)}


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_layer_disc_found(u8_masks: dict[int, np.ndarray], channels: int) -> None:
    mask = u8_masks[channels]
    subject = INNER & ~TRANSPARENT if channels in (2, 4) else INNER

    assert (mask[subject] >= 200).mean() >= 0.95
    assert mask[OUTER].mean() <= 5


@pytest.mark.parametrize("channels", [2, 4])
def test_layer_alpha_respected(u8_masks: dict[int, np.ndarray], channels: int) -> None:
    assert (u8_masks[channels][TRANSPARENT] == 0).all()


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("sample", ["u16", "f32"])
def test_sample_types_agree(client: WorkerClient, u8_masks: dict[int, np.ndarray], sample: str,
                            channels: int) -> None:
    mask = worker_mask(client, disc_samples(channels), sample)

    assert np.abs(mask.astype(int) - u8_masks[channels]).max() <= 1


def test_limit_plane_bounds_mask(client: WorkerClient) -> None:
    limit = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    limit[:, 64:] = 255  # the right half of the disc

    mask = worker_mask(client, disc_samples(3), limit=limit.tobytes())

    assert (mask[:, :64] == 0).all()
    assert (mask[INNER & (COLUMNS >= 70)] >= 200).mean() >= 0.95


def test_empty_limit_gives_empty_mask(client: WorkerClient) -> None:
    limit = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)

    mask = worker_mask(client, disc_samples(3), limit=limit.tobytes())

    assert (mask == 0).all()


def test_hint_plane_kept(client: WorkerClient) -> None:
    hint = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
    hint[44:52, 60:68] = 255  # the disc's centre marked as subject
    hint[:10, :10] = 0  # a background corner marked as background

    mask = worker_mask(client, disc_samples(3), hint=hint.tobytes())

    assert (mask[44:52, 60:68] == 255).all()
    assert (mask[:10, :10] == 0).all()
    assert (mask[INNER] >= 200).mean() >= 0.95
    assert mask[OUTER].mean() <= 5


def test_hint_overrides_model(client: WorkerClient) -> None:
    hint = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
    hint[:10, :10] = 255  # background marked as subject
    hint[40:56, 56:72] = 0  # the disc's centre marked as background

    mask = worker_mask(client, disc_samples(3), hint=hint.tobytes())

    assert (mask[:10, :10] == 255).all()
    assert (mask[40:56, 56:72] == 0).all()


def test_foreground_output(client: WorkerClient) -> None:
    samples = disc_samples(3)
    header = remove_background_header(width=WIDTH, height=HEIGHT, channels=3,
                                      options={"model": "u2netp", "outputs": ["mask", "foreground"]})

    reply, payload = client.request(header, samples.tobytes())

    mask = np.frombuffer(payload[:WIDTH * HEIGHT], dtype=np.uint8).reshape(HEIGHT, WIDTH)
    foreground = np.frombuffer(payload[WIDTH * HEIGHT:], dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)
    # Pixels with mask 0 or 255 keep the layer's colours; the soft edge gets estimated colours.
    solid = (mask == 0) | (mask == 255)
    assert reply["outputs"] == ["mask", "foreground"]
    assert len(payload) == WIDTH * HEIGHT * 4
    assert (foreground[solid] == samples[solid]).all()
    assert (foreground[INNER] == 230).all()


def test_progress_reported(client: WorkerClient) -> None:
    reports: list[tuple[float, str]] = []

    def record(fraction: float, stage: str) -> None:
        reports.append((fraction, stage))

    client.remove_background(4, 3, 1, "u8", bytes(12), options={"model": "u2netp"}, on_progress=record)

    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert "inference" in [stage for _, stage in reports]


def test_cancel_then_next_request(client: WorkerClient) -> None:
    with pytest.raises(WorkerError) as caught:
        client.remove_background(4, 3, 1, "u8", bytes(12), options={"model": "u2netp"},
                                 on_progress=lambda fraction, stage: True)

    assert caught.value.code == "cancelled"
    assert client.process is None
    assert client.request({"op": "ping"})[0]["type"] == "pong"


BAD_REQUESTS = {
    "width zero": (remove_background_header(width=0), 12, "invalid width 0"),
    "width text": (remove_background_header(width="4"), 12, "invalid width '4'"),
    "height fraction": (remove_background_header(height=2.5), 12, "invalid height 2.5"),
    "channels five": (remove_background_header(channels=5), 12, "invalid channels 5"),
    "sample u12": (remove_background_header(sample="u12"), 12, "invalid sample 'u12'"),
    "sample list": (remove_background_header(sample=["u8"]), 12, "invalid sample ['u8']"),
    "payload short": (remove_background_header(), 11, "payload has 11 bytes, expected 12"),
    "payload long": (remove_background_header(), 13, "payload has 13 bytes, expected 12"),
    "plane unknown": (remove_background_header(planes=["mask"]), 24, "invalid planes ['mask']"),
    "plane nested": (remove_background_header(planes=[["limit"]]), 24, "invalid planes [['limit']]"),
    "option unknown": (remove_background_header(options={"colour": "red"}), 12, "unknown option(s) colour"),
    "model unknown": (remove_background_header(options={"model": "nope"}), 12, "unknown model 'nope'"),
    "model list": (remove_background_header(options={"model": ["u2netp"]}), 12, "invalid option model"),
    "refine text": (remove_background_header(options={"refine": "no"}), 12, "invalid option refine 'no'"),
    "feather nan": (remove_background_header(options={"feather": float("nan")}), 12, "invalid option feather nan"),
    "grow text": (remove_background_header(options={"grow": "2"}), 12, "invalid option grow '2'"),
    "threshold high": (remove_background_header(options={"threshold": 256}), 12, "invalid option threshold 256"),
    "threads huge": (remove_background_header(options={"threads": 100000}), 12, "invalid option threads 100000"),
    "outputs nested": (remove_background_header(options={"outputs": [{}]}), 12, "invalid outputs [{}]"),
    "options list": (remove_background_header(options=[1]), 12, "invalid options [1]"),
    "op unknown": ({"op": "paint", "id": 7}, 0, "unknown op 'paint'"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_then_served(client: WorkerClient, case: str) -> None:
    header, payload_size, expected_message = BAD_REQUESTS[case]
    client.start()
    process_id = client.process.pid

    with pytest.raises(WorkerError) as caught:
        client.request(header, bytes(payload_size))

    assert caught.value.code == "bad_request"
    assert expected_message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert client.request({"op": "ping"})[0]["type"] == "pong"
    assert client.process.pid == process_id


def test_huge_layer_too_large(client: WorkerClient) -> None:
    with pytest.raises(WorkerError) as caught:
        client.request(remove_background_header(width=20000, height=20000), b"")

    assert caught.value.code == "too_large"
    assert "20000 x 20000" in str(caught.value)
    assert client.request({"op": "ping"})[0]["type"] == "pong"


def model_folder_with(tmp_path: Path, content: bytes | None) -> dict[str, str]:
    """An environment whose models folder contains `content` as u2netp's file (nothing when None)."""
    folder = tmp_path / "models"
    folder.mkdir()
    if content is not None:
        (folder / get_model("u2netp").file).write_bytes(content)
    return {**os.environ, "AI_REMOVE_BACKGROUND_MODELS": str(folder)}


def test_missing_model_reported(tmp_path: Path) -> None:
    worker = WorkerClient(sys.executable, env=model_folder_with(tmp_path, None), timeout_seconds=PROCESS_TIMEOUT_SECONDS)
    try:
        with pytest.raises(WorkerError) as caught:
            worker.remove_background(4, 3, 1, "u8", bytes(12), options={"model": "u2netp"})
        pong = worker.request({"op": "ping"})[0]
    finally:
        worker.close()

    assert caught.value.code == "model_missing"
    assert "install.py --models u2netp" in str(caught.value)
    assert pong["models"] == []


def test_corrupt_model_reported(tmp_path: Path) -> None:
    good = (models_dir() / get_model("u2netp").file).read_bytes()
    corrupt = good[:1000] + bytes(256) + good[1256:]
    worker = WorkerClient(sys.executable, env=model_folder_with(tmp_path, corrupt), timeout_seconds=PROCESS_TIMEOUT_SECONDS)
    try:
        with pytest.raises(WorkerError) as caught:
            worker.remove_background(4, 3, 1, "u8", bytes(12), options={"model": "u2netp"})
    finally:
        worker.close()

    assert caught.value.code == "model_invalid"
    assert get_model("u2netp").file in str(caught.value)
    assert "sha256" in str(caught.value)
    assert "install.py --models u2netp" in str(caught.value)


def frames_from(data: bytes) -> list[dict[str, Any]]:
    """Parse a whole byte stream as frames; fail on any byte that is not part of a frame."""
    stream = io.BytesIO(data)
    headers = []
    while stream.tell() < len(data):
        header, _ = read_frame(stream)
        headers.append(header)
    return headers


def run_worker_raw(data: bytes) -> tuple[list[dict[str, Any]], int, str]:
    """Send raw bytes to a fresh worker, close its input, and return (reply headers, exit status, stderr)."""
    process = subprocess.run(WORKER_COMMAND, input=data, capture_output=True, timeout=PROCESS_TIMEOUT_SECONDS)
    return frames_from(process.stdout), process.returncode, process.stderr.decode("utf-8", "replace")


def header_bytes(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


MALFORMED_STREAMS = {
    "header length huge": (b"\xff\xff\xff\xff" + b"x" * 64, f"exceeds {MAX_HEADER_BYTES}"),
    "header not json": (header_bytes(b"hello"), "malformed frame"),
    "header not utf-8": (header_bytes(b"\xff\xfe{}"), "malformed frame"),
    "header an array": (header_bytes(b"[1, 2]"), "not a JSON object"),
    "header nested deeply": (header_bytes(b"[" * 100000), "too deeply"),
    "payload size negative": (header_bytes(b'{"op": "ping", "payload_bytes": -1}'), "invalid payload_bytes -1"),
    "payload size text": (header_bytes(b'{"op": "ping", "payload_bytes": "4"}'), "invalid payload_bytes '4'"),
    "payload size huge": (header_bytes(b'{"op": "ping", "payload_bytes": 10000000000000}'), "exceeds the maximum"),
    "length cut": (b"\x00\x00", "truncated frame"),
    "header cut": (struct.pack(">I", 40) + b'{"op": "pi', "truncated frame"),
    "payload cut": (encode_frame({"op": "ping"}, bytes(100))[:-90], "truncated frame"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_STREAMS))
def test_malformed_frame_ends_worker(case: str) -> None:
    data, expected_message = MALFORMED_STREAMS[case]

    replies, status, stderr = run_worker_raw(encode_frame({"op": "ping", "id": 1}) + data)

    assert [reply["type"] for reply in replies] == ["pong", "error"]
    assert replies[1]["code"] == "protocol"
    assert expected_message in replies[1]["message"]
    assert status == 1
    assert "Traceback" not in stderr


def test_end_of_input_ends_worker() -> None:
    replies, status, stderr = run_worker_raw(encode_frame({"op": "ping", "id": 1}))

    assert [reply["type"] for reply in replies] == ["pong"]
    assert status == 0
    assert "Traceback" not in stderr


def test_shutdown_replies_bye() -> None:
    data = encode_frame({"op": "shutdown", "id": 2}) + encode_frame({"op": "ping", "id": 3})

    replies, status, _ = run_worker_raw(data)

    assert replies == [{"type": "bye", "id": 2, "payload_bytes": 0}]
    assert status == 0


def test_protocol_error_restarts_client(client: WorkerClient) -> None:
    client.start()
    assert client.process is not None and client.process.stdin is not None
    client.process.stdin.write(b"\xff\xff\xff\xff")

    with pytest.raises(WorkerError) as caught:
        client.request({"op": "ping"})

    assert caught.value.code == "protocol"
    assert client.process is None
    assert client.request({"op": "ping"})[0]["type"] == "pong"


def fake_python(tmp_path: Path, script: str) -> str:
    """Write an executable that replaces the engine's Python and runs a shell script; return its path."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")
def test_client_reports_crash(tmp_path: Path) -> None:
    worker = WorkerClient(fake_python(tmp_path, "echo 'engine exploded' >&2; exit 3"), timeout_seconds=60)

    with pytest.raises(WorkerError) as caught:
        worker.request({"op": "ping"})

    assert caught.value.code == "worker_crashed"
    assert str(caught.value) == "the engine stopped unexpectedly (engine exploded); try again"
    assert worker.process is None


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")
def test_client_times_out(tmp_path: Path) -> None:
    worker = WorkerClient(fake_python(tmp_path, "exec sleep 120"), timeout_seconds=1)

    with pytest.raises(WorkerError) as caught:
        worker.request({"op": "ping"})

    assert caught.value.code == "timeout"
    assert worker.process is None


def test_client_missing_python(tmp_path: Path) -> None:
    worker = WorkerClient(str(tmp_path / "no-such-python"))

    with pytest.raises(WorkerError) as caught:
        worker.request({"op": "ping"})

    assert caught.value.code == "engine_missing"


# A stand-in worker that sends `steps` progress replies `pause` seconds apart, then, after
# `last_pause` seconds, a one-byte result. It reads the request frame first, as the real worker does.
SLOW_WORKER = """
import json, struct, sys, time
length = struct.unpack(">I", sys.stdin.buffer.read(4))[0]
header = json.loads(sys.stdin.buffer.read(length))
sys.stdin.buffer.read(header.get("payload_bytes", 0))
def send(reply, payload=b""):
    reply["payload_bytes"] = len(payload)
    data = json.dumps(reply).encode()
    sys.stdout.buffer.write(struct.pack(">I", len(data)) + data + payload)
    sys.stdout.buffer.flush()
for step in range({steps}):
    time.sleep({pause})
    send({{"type": "progress", "fraction": step / {steps}, "stage": "working"}})
time.sleep({last_pause})
send({{"type": "result", "id": header.get("id")}}, b"x")
"""


def slow_worker(tmp_path: Path, steps: int, pause: float, last_pause: float) -> str:
    script = tmp_path / "slow_worker.py"
    script.write_text(SLOW_WORKER.format(steps=steps, pause=pause, last_pause=last_pause))
    return fake_python(tmp_path, f'exec "{sys.executable}" "{script}"')


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")
def test_client_timeout_restarts_with_each_progress_reply(tmp_path: Path) -> None:
    # 2.4 s in all, but never more than 0.3 s of silence.
    worker = WorkerClient(slow_worker(tmp_path, steps=7, pause=0.3, last_pause=0.3), timeout_seconds=1.5)
    stages = []

    reply, payload = worker.request({"op": "remove_background", "id": 7},
                                    on_progress=lambda fraction, stage: stages.append(stage))

    assert (reply["type"], reply["id"], payload) == ("result", 7, b"x")
    assert stages == ["working"] * 7
    worker.close()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")
def test_client_times_out_after_progress_stops(tmp_path: Path) -> None:
    # Two progress replies, then 30 s of silence.
    worker = WorkerClient(slow_worker(tmp_path, steps=2, pause=0.2, last_pause=30), timeout_seconds=1)
    worker.start()
    process = worker.process
    stages = []

    with pytest.raises(WorkerError) as caught:
        worker.request({"op": "remove_background", "id": 1}, on_progress=lambda fraction, stage: stages.append(stage))

    assert caught.value.code == "timeout"
    assert str(caught.value) == "the engine sent nothing for 1 s and was stopped: try again"
    assert stages == ["working", "working"]
    assert process.poll() is not None
    assert worker.process is None


def write_engine_file(plugin_dir: Path, python: str, **extra: Any) -> None:
    plugin_dir.mkdir(exist_ok=True)
    config = {"python": python, "environment": {}, **extra}
    (plugin_dir / "engine.json").write_text(json.dumps(config))


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Python is a shell script")
def test_engine_file_sets_timeout_and_names_it(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugin"
    write_engine_file(plugin_dir, fake_python(tmp_path, "exec sleep 120"), timeout_seconds=0.5)
    worker = WorkerClient.from_plugin_dir(str(plugin_dir))

    with pytest.raises(WorkerError) as caught:
        worker.request({"op": "ping"})

    assert worker.timeout_seconds == 0.5
    assert str(caught.value) == (
        "the engine sent nothing for 0.5 s and was stopped: try again; for very large layers, "
        f"raise timeout_seconds in {plugin_dir / 'engine.json'}"
    )


def test_engine_file_default_timeout(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugin"
    write_engine_file(plugin_dir, sys.executable)

    assert WorkerClient.from_plugin_dir(str(plugin_dir)).timeout_seconds == DEFAULT_TIMEOUT_SECONDS


@pytest.mark.parametrize("value", [0, -3, "600", True, None])
def test_engine_file_bad_timeout_rejected(tmp_path: Path, value: Any) -> None:
    plugin_dir = tmp_path / "plugin"
    write_engine_file(plugin_dir, sys.executable, timeout_seconds=value)

    with pytest.raises(WorkerError) as caught:
        WorkerClient.from_plugin_dir(str(plugin_dir))

    assert f"timeout_seconds {value!r} in {plugin_dir / 'engine.json'} is not a positive number" in str(caught.value)


def limited_client(limit: str) -> WorkerClient:
    return WorkerClient(sys.executable, env={**os.environ, MAX_MEGAPIXELS_VARIABLE: limit},
                        timeout_seconds=PROCESS_TIMEOUT_SECONDS)


def test_layer_size_limit_from_environment() -> None:
    # The disc layer is 128 x 96 = 0.0123 megapixels.
    worker = limited_client("0.01")
    try:
        with pytest.raises(WorkerError) as caught:
            worker.remove_background(WIDTH, HEIGHT, 3, "u8", disc_samples(3).tobytes())
        _, mask = worker.remove_background(64, 96, 3, "u8", np.ascontiguousarray(disc_samples(3)[:, :64]).tobytes(),
                                           options={"model": "u2netp"})
    finally:
        worker.close()

    assert caught.value.code == "too_large"
    assert str(caught.value) == (
        "layer is 128 x 96 (0.0123 megapixels), over the limit of 0.01: scale it down, or raise the limit "
        f"with {MAX_MEGAPIXELS_VARIABLE} in the environment of the plug-in's engine.json"
    )
    assert len(mask) == 64 * 96


@pytest.mark.parametrize("limit", ["many", "0", "-5", "nan", "inf"])
def test_bad_layer_size_limit_reported_per_request(limit: str) -> None:
    worker = limited_client(limit)
    try:
        pong, _ = worker.request({"op": "ping"})
        with pytest.raises(WorkerError) as caught:
            worker.remove_background(WIDTH, HEIGHT, 3, "u8", disc_samples(3).tobytes())
    finally:
        worker.close()

    assert pong["type"] == "pong"
    assert caught.value.code == "bad_request"
    assert str(caught.value).startswith(f"{MAX_MEGAPIXELS_VARIABLE}={limit!r} is not a positive number of megapixels")


def check_reply_stream(output: bytes, status: int) -> None:
    """Check that a worker's output is whole frames of known replies, and its status matches them."""
    replies = frames_from(output)
    for reply in replies:
        assert reply["type"] in REPLY_TYPES
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES
            assert reply["code"] != "internal", reply["message"]
            assert isinstance(reply["message"], str)
            assert "\n" not in reply["message"]
    protocol_error = bool(replies) and replies[-1]["type"] == "error" and replies[-1]["code"] == "protocol"
    assert status == (1 if protocol_error else 0)


def serve_bytes(data: bytes) -> tuple[bytes, int]:
    output = io.BytesIO()
    status = serve(io.BytesIO(data), output)
    return output.getvalue(), status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
header_keys = st.sampled_from(["op", "id", "width", "height", "channels", "sample", "planes", "options"])
option_values = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["u2netp", "nope"]) | json_values,
    "refine": st.booleans() | json_values,
    "threshold": st.integers(-5, 300) | json_values,
    "grow": st.floats(-20, 20) | json_values,
    "feather": st.floats(0, 20) | json_values,
    "invert": st.booleans() | json_values,
    "outputs": st.sampled_from([["mask"], ["mask", "foreground"], ["foreground"]]) | json_values,
    "threads": st.integers(-1, 300) | json_values,
    "colour": json_values,
})


@st.composite
def request_frames(draw: st.DrawFn) -> bytes:
    """A frame that is well formed, with a header that is valid, nearly valid or random."""
    width, height = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    channels, sample = draw(st.integers(1, 4)), draw(st.sampled_from(["u8", "u16", "f32"]))
    planes = draw(st.sampled_from([[], ["limit"], ["hint"], ["hint", "limit"], ["limit", "limit"], "limit"]))
    header: dict[str, Any] = {"op": draw(st.sampled_from(["remove_background", "ping", "remove"])),
                              "id": draw(json_values), "width": width, "height": height, "channels": channels,
                              "sample": sample, "planes": planes,
                              "options": {"model": "u2netp", **draw(option_values)}}
    for key in draw(st.lists(header_keys, max_size=3)):
        if draw(st.booleans()):
            header.pop(key, None)
        else:
            header[key] = draw(json_values)
    plane_count = len(planes) if isinstance(planes, list) else 0
    exact_size = width * height * (channels * {"u8": 1, "u16": 2, "f32": 4}[sample] + plane_count)
    size = draw(st.sampled_from([exact_size, exact_size, 0, exact_size + 1]))
    return encode_frame(header, draw(st.binary(min_size=size, max_size=size)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    output, status = serve_bytes(data)

    check_reply_stream(output, status)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request_frames(), min_size=1, max_size=3), st.binary(max_size=12))
def test_fuzz_request_headers(frames: list[bytes], tail: bytes) -> None:
    output, status = serve_bytes(b"".join(frames) + tail)

    check_reply_stream(output, status)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.integers(0, 64))
def test_fuzz_json_headers(value: Any, payload_size: int) -> None:
    text = json.dumps(value).encode("utf-8")

    output, status = serve_bytes(header_bytes(text) + bytes(payload_size))

    check_reply_stream(output, status)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request_frames(), max_size=2), st.binary(max_size=64))
def test_fuzz_real_process(frames: list[bytes], tail: bytes) -> None:
    process = subprocess.run(WORKER_COMMAND, input=b"".join(frames) + tail, capture_output=True,
                             timeout=PROCESS_TIMEOUT_SECONDS)

    check_reply_stream(process.stdout, process.returncode)
    assert "Traceback" not in process.stderr.decode("utf-8", "replace")


def test_models_folder_from_environment(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(models_dir() / get_model("u2netp").file, folder / get_model("u2netp").file)
    worker = WorkerClient(sys.executable, env={**os.environ, "AI_REMOVE_BACKGROUND_MODELS": str(folder)},
                          timeout_seconds=PROCESS_TIMEOUT_SECONDS)
    try:
        pong = worker.request({"op": "ping"})[0]
    finally:
        worker.close()

    assert pong["models"] == ["u2netp"]
