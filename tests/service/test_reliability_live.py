"""The real server (``python -m service serve``, uvicorn, loopback) under churn, concurrency and shutdown.

* soak: 120 WebSocket connect -> stream a real (downscaled) JPEG frame -> disconnect cycles, half of
  them hanging up while their frame is still in pose; the server's resident memory must stay flat
  after warm-up and every stream and track must be freed (``/metrics``);
* isolation: two clients stream different real clips at once; each sees only its own people;
* slow clients: a request body that stalls gets 408, and meanwhile another ``POST /recognize``
  beyond the admission limit gets 503 ``busy``; a WebSocket message over uvicorn's cap closes 1009;
  an idle stream is closed;
* graceful shutdown: SIGTERM while a stream is open -> ``shutting_down`` and close code 1001, and
  the process exits.

One server for the module (start-up costs seconds on a shared CPU); the shutdown test runs last.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.streams.clock import capture_prefix
from tests.conftest import REPO_ROOT, require_data
from tests.service_helpers import jpeg_frames, write_linear_model

LABELS = ["stand", "walk", "fall", "sit"]
SOAK_CYCLES = 160
WARMUP_CYCLES = 40  # of the SOAK_CYCLES; memory growth is measured over the rest
MAX_RSS_GROWTH_MB = 30.0
# Idle readings of the server stay within ~10 MB of each other (452-463 MB over 600 streams;
# 453-464 MB beside a training test; 2026-11-30) now that it gives every thread the main malloc
# arena and trims after rebuilding spares (docs/security.md, "Memory"). Before, one reading swung
# by up to 75 MB from the next and this test failed in CI at +64 MB (545 -> 599 -> 620 -> 610).
# A leak raises every later reading, so growth is the lower of the last two readings (80 and 120
# cycles after the baseline) minus the baseline.
IDLE_TIMEOUT_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def metric(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("live")
    write_linear_model(root / "zoo" / "linear", LABELS, length=8, fps=10, stride=2)
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SKELACT_MODELS_DIR": str(root / "zoo"),
        "SKELACT_PROVIDERS": "cpu",
        "SKELACT_LOG_LEVEL": "warning",
        "SKELACT_POSE_WORKERS": "2",
        "SKELACT_MAX_CONCURRENT_CLIPS": "1",
        "SKELACT_MAX_QUEUED_CLIPS": "0",
        "SKELACT_READ_TIMEOUT_S": "1",
        "SKELACT_MAX_FRAME_BYTES": str(1 << 20),
        "SKELACT_MAX_MESSAGE_BYTES": str(1 << 20),
        "SKELACT_STREAM_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        "SKELACT_SHUTDOWN_TIMEOUT_S": "5",
        # a frame's age bound is tested in test_ws_stream; here a reply must come however loaded the
        # host (under load the soak's frames waited 4.5 s and were dropped with frame_expired)
        "SKELACT_STREAM_MAX_QUEUE_MS": "600000",
    }
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(proc, port, log)
    try:
        deadline = time.monotonic() + 180  # start-up took 31 s on a CI runner
        while True:
            assert proc.poll() is None, f"server exited:\n{srv.tail()}"
            try:
                if srv.http.get("/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{srv.tail()}"
            time.sleep(0.2)
        yield srv
    finally:
        srv.http.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def small_frames() -> list[bytes]:
    """Real UP-Fall frames, downscaled to 320 px, as a webcam client would send them."""
    jpegs, _ = jpeg_frames(require_data("upfall", "Activity7", "Trial1Cam1.mp4"), 20, start=30, max_side=320)
    return jpegs


def _recv_json(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    msg = ws.recv(timeout=timeout)
    assert isinstance(msg, str), msg
    out: dict[str, Any] = json.loads(msg)
    return out


def _next_frame(ws: ClientConnection) -> dict[str, Any]:
    while True:
        msg = _recv_json(ws)
        assert msg["type"] != "error", msg
        if msg["type"] == "frame":
            return msg


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _wait_for_zero(server: Server, *names: str, timeout: float = 15.0) -> tuple[float, ...]:
    """Poll the metrics ``names`` until all are 0 or ``timeout`` passes; their last values."""
    deadline = time.monotonic() + timeout
    while True:
        values = tuple(server.metric(name) for name in names)
        if not any(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.1)


def _wait_for_value(server: Server, name: str, value: float, timeout: float = 120.0) -> None:
    """Poll the metric ``name`` until it reads ``value`` (the server's own account of an event)."""
    deadline = time.monotonic() + timeout
    while (got := server.metric(name)) != value:
        assert time.monotonic() < deadline, f"{name} is {got}, not {value}, after {timeout} s"
        time.sleep(0.05)


def _wait_freed(server: Server, timeout: float = 15.0) -> tuple[float, ...]:
    """(open streams, tracked people) once both are 0, or as they are after ``timeout``."""
    return _wait_for_zero(server, "skelact_active_streams", "skelact_active_tracks", timeout=timeout)


@pytest.mark.timeout(900)  # a bound, not a speed: 300 s (server start-up included) ran out at load 26
def test_soak_connect_stream_disconnect_cycles(server: Server, small_frames: list[bytes]) -> None:
    """160 cycles from two clients at once; half hang up while their frame is still in pose
    (the cycles of ``python -m bench.idle_memory``, which runs them longer on the shipped models)."""
    from bench.idle_memory import run_cycles

    pid = server.proc.pid

    def idle_rss() -> float:
        """RSS once every stream is closed and its memory handed back (the server trims on close)
        and the spare estimators taken by the streams are built again: a reading taken while they
        were still building (a slow or shared host) looked like 100 MB of growth later."""
        assert _wait_freed(server) == (0, 0)
        missing = _wait_for_zero(server, "skelact_pose_spares_missing", timeout=30)
        assert missing == (0,), "spare estimators were not rebuilt"
        time.sleep(0.5)
        return round(_rss_mb(pid), 1)

    with connect(server.ws_url, open_timeout=30, max_size=None) as ws:  # a stream takes a spare
        assert _recv_json(ws)["type"] == "hello"
        assert server.metric("skelact_pose_spares_missing") >= 1
    t0 = time.monotonic()
    # warm-up: allocator pools, MediaPipe graph caches
    run_cycles(server.ws_url, small_frames, 0, WARMUP_CYCLES // 2)
    samples = [(WARMUP_CYCLES, idle_rss())]
    for done in range(WARMUP_CYCLES, SOAK_CYCLES, 40):
        run_cycles(server.ws_url, small_frames, done // 2, 20)  # 20 per client
        samples.append((done + 40, idle_rss()))
    elapsed = time.monotonic() - t0
    streams, tracks = _wait_freed(server)
    baseline, final = samples[0][1], min(rss for _, rss in samples[-2:])
    growth = final - baseline
    print(
        f"\nsoak: {samples[-1][0]} cycles (2 clients, {WARMUP_CYCLES} warm-up) in {elapsed:.1f} s; "
        f"idle server RSS {baseline:.1f} MB -> {final:.1f} MB (lower of the last two; "
        f"growth {growth:+.1f} MB); samples {samples}"
    )
    assert (streams, tracks) == (0, 0), "a stream or its tracks were not freed"
    assert growth < MAX_RSS_GROWTH_MB, samples
    # Every polite cycle's frame was answered (checked per cycle). A hang-up right after the send can
    # lose that frame before the server reads it (the close races the data on a busy host: CI saw
    # 199 of 200), so most, not all, of the impolite frames must have arrived.
    polite = (SOAK_CYCLES + 1) // 2
    received = server.metric('skelact_frames_received_total{source="stream"}')
    assert received >= polite + 0.9 * (SOAK_CYCLES - polite), received
    assert server.http.get("/health/ready").status_code == 200


def _stream(
    server: Server, jpegs: list[bytes], started: Any = None, wait_for: Any = None
) -> list[dict[str, Any]]:
    """Stream ``jpegs`` one frame in flight at a time, each with a capture time 0.1 s after the
    one before (the window clock runs on them, however fast the server answers); optionally wait
    first, or signal once a track's window is full."""
    if wait_for is not None:
        assert wait_for.wait(60)
    replies = []
    with connect(server.ws_url, open_timeout=30, max_size=None) as ws:
        assert _recv_json(ws)["type"] == "hello"
        for i, jpg in enumerate(jpegs):
            ws.send(capture_prefix(i / 10) + jpg)
            replies.append(_next_frame(ws))
            full = any(t["window_fill"] > 0.9 for t in replies[-1]["tracks"])
            if started is not None and (full or i == len(jpegs) - 1):
                started.set()
    return replies


def _centre(track: dict[str, Any], w: int, h: int) -> tuple[float, float]:
    x0, y0, x1, y1 = track["box"]
    return (x0 + x1) / 2 / w, (y0 + y1) / 2 / h


@pytest.mark.timeout(120)
def test_two_concurrent_streams_never_share_tracks_or_buffers(server: Server) -> None:
    import threading

    a, _ = jpeg_frames(require_data("upfall", "Activity7", "Trial1Cam1.mp4"), 16, start=20)  # 640x480
    b, _ = jpeg_frames(require_data("clips", "stgcn_ta_chi.mp4"), 10, start=60)  # 340x256
    size = {"a": (640, 480), "b": (340, 256)}
    solo = {"a": _stream(server, a), "b": _stream(server, b)}
    # together: B connects while A is mid-stream (A's buffers full, its tracker numbering going)
    pair: dict[str, list[dict[str, Any]]] = {}
    a_running = threading.Event()
    threads = [
        threading.Thread(target=lambda: pair.__setitem__("a", _stream(server, a, started=a_running))),
        threading.Thread(target=lambda: pair.__setitem__("b", _stream(server, b, wait_for=a_running))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert set(pair) == {"a", "b"}
    for name, frames in (("a", a), ("b", b)):
        w, h = size[name]
        replies = pair[name]
        n = len(frames)
        assert [r["frame_id"] for r in replies] == list(range(n))  # counters are per connection
        assert [r["received"] for r in replies] == list(range(1, n + 1))
        assert all((r["width"], r["height"]) == (w, h) for r in replies)
        ids = {t["track_id"] for r in replies for t in r["tracks"]}
        assert ids and min(ids) == 1, (name, ids)  # each connection numbers its own tracks from 1
        for r in replies:  # nobody from the other clip: every box lies in this clip's frame ...
            for t in r["tracks"]:
                x0, y0, x1, y1 = t["box"]
                assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h, (name, t["box"])
        # ... and every person is where the stream alone found one, frame by frame
        matched = total = 0
        for r_solo, r_pair in zip(solo[name], replies, strict=True):
            ref = [_centre(t, w, h) for t in r_solo["tracks"]]
            for t in r_pair["tracks"]:
                cx, cy = _centre(t, w, h)
                total += 1
                matched += any(abs(cx - rx) < 0.1 and abs(cy - ry) < 0.1 for rx, ry in ref)
        assert total and matched >= 0.9 * total, (name, matched, total)
    # B's buffer started empty although A's was full when B connected (A's 8-frame window at its
    # 9th frame of 16): buffers are per connection
    a_fill = max(t["window_fill"] for r in pair["a"] for t in r["tracks"])
    b_first_fill = max((t["window_fill"] for t in pair["b"][0]["tracks"]), default=0.0)
    assert a_fill > 0.9 and b_first_fill < 0.5, (a_fill, b_first_fill)
    assert [r["timestamp"] for r in pair["b"]] == [round(i / 10, 4) for i in range(len(b))]


def _read_response(sock: socket.socket) -> str:
    """One whole HTTP/1.1 response (headers and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, data
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


@pytest.mark.timeout(180)
def test_stalled_body_gets_408_while_extra_clips_get_busy(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as slow:
        slow.sendall(
            b"POST /recognize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n" + b'{"frames": ['
        )  # ... and then nothing: it holds the only admission slot until the read timeout
        _wait_for_value(server, "skelact_recognize_in_progress", 1)  # admitted
        r = server.http.post("/recognize", json={"frames": [{"timestamp": 0}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "busy", r.text
        assert r.headers.get("retry-after") == "5"
        reply = _read_response(slow)  # SKELACT_READ_TIMEOUT_S=1 after its last bytes
    assert reply.startswith("HTTP/1.1 408"), reply
    assert '"read_timeout"' in reply
    _wait_for_value(server, "skelact_recognize_in_progress", 0)
    # the slot is free again and the server serves
    r = server.http.post("/recognize", json={"frames": [{"timestamp": 0}]})
    assert r.status_code == 200, r.text
    assert server.http.get("/health/ready").status_code == 200


@pytest.mark.timeout(300)
def test_a_client_that_hangs_up_cancels_its_recognition(server: Server) -> None:
    """A 45 s clip is about a minute of pose work here; the client hangs up once it is in pose.
    The clip is cancelled (its outcome says so: one that ran to the end would be ``ok``) and the
    only clip slot is free again."""
    video = require_data("upfall", "Activity6", "Trial1Cam1.mp4")
    request = httpx.Request(
        "POST",
        f"http://127.0.0.1:{server.port}/recognize",
        files={"file": (video.name, video.read_bytes(), "video/mp4")},
    )
    body = request.read()
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host")
    metric = 'skelact_recognize_requests_total{outcome="client_disconnected"}'
    before = _metric_or_zero(server, metric)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(f"POST /recognize HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        _wait_for_value(server, "skelact_clips_in_pose", 1)  # uploaded, checked, in pose
        busy = server.http.post("/recognize", json={"frames": [{"timestamp": 0}]})
        assert busy.status_code == 503, busy.text  # the clip holds the only slot
    _wait_for_value(server, "skelact_recognize_in_progress", 0)
    _wait_for_value(server, "skelact_clips_in_pose", 0)
    assert _metric_or_zero(server, metric) == before + 1
    r = server.http.post("/recognize", json={"frames": [{"timestamp": 0}]})
    assert r.status_code == 200, r.text


def _metric_or_zero(server: Server, name: str) -> float:
    try:
        return server.metric(name)
    except AssertionError:
        return 0.0


@pytest.mark.timeout(60)
def test_protocol_level_oversize_and_idle_streams_are_closed(server: Server) -> None:
    with connect(server.ws_url, open_timeout=30, max_size=None) as ws:
        assert _recv_json(ws)["type"] == "hello"
        ws.send(b"\xff\xd8" + b"\x00" * (3 << 20))  # over uvicorn's ws_max_size
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with connect(server.ws_url, open_timeout=30) as ws:
        assert _recv_json(ws)["type"] == "hello"
        t0 = time.monotonic()
        msg = _recv_json(ws, timeout=IDLE_TIMEOUT_S + 20)
        assert msg["code"] == "idle_timeout", msg
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert time.monotonic() - t0 >= IDLE_TIMEOUT_S - 0.5
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert _wait_freed(server) == (0, 0)


@pytest.mark.timeout(90)
def test_sigterm_closes_open_streams_with_1001_and_exits(server: Server, small_frames: list[bytes]) -> None:
    with connect(server.ws_url, open_timeout=30, max_size=None) as ws:
        assert _recv_json(ws)["type"] == "hello"
        ws.send(small_frames[0])
        _next_frame(ws)
        ws.send(small_frames[1])  # in flight when the signal comes: it is finished, then the close
        server.proc.send_signal(signal.SIGTERM)
        seen: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                seen.append(_recv_json(ws, timeout=30))
    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    assert closed.value.rcvd.code == 1001, closed.value.rcvd
    assert "shutting down" in closed.value.rcvd.reason
    assert seen and seen[-1] == {
        "type": "error",
        "code": "shutting_down",
        "message": "the server is shutting down; reconnect shortly",
    }
    assert server.proc.wait(30) in (0, -signal.SIGTERM), server.tail()
    assert "Traceback" not in server.tail()
