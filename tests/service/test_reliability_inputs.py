"""A corpus of bad inputs against the real app (TestClient, real lifespan, real clips).

Every case must get a clear answer -- a 4xx JSON error ``{"error": {"code", "message"}}`` over HTTP,
``{"type": "error", "code", "message"}`` over the WebSocket -- and the service must keep serving:
``/health/ready`` after each HTTP case, a good frame on the same connection after each WebSocket
case. Also: request bodies capped while they stream in, a per-stream message rate, a processing
timeout that frees its slot, model names that are never paths, and 500s that carry an error id but
no stack trace.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.core.limits import StreamGuard
from tests.conftest import require_data
from tests.service_helpers import jpeg_frames, trim_video, wait_ready, write_linear_model

pytestmark = pytest.mark.timeout(60)

LABELS = ["stand", "walk", "fall", "sit"]
PTS = [[300.0 + 2 * j, 100.0 + 8 * j, 0.0] for j in range(33)]
WORLD = [[0.01 * j, -0.02 * j, 0.0] for j in range(33)]
MAX_FRAME_BYTES = 256 << 10
MAX_MESSAGE_BYTES = 64 << 10


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    zoo = tmp_path_factory.mktemp("zoo")
    write_linear_model(zoo / "linear", LABELS, length=8, fps=10, stride=2)
    settings = Settings(
        models_dir=zoo,
        providers=["cpu"],
        warmup=False,
        max_upload_mb=1.0,
        max_json_mb=0.5,
        max_frame_bytes=MAX_FRAME_BYTES,
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    app = create_app(settings)

    @app.get("/_test/boom", include_in_schema=False)
    async def boom() -> None:  # a bug in a route, to see what a client gets back
        raise RuntimeError("secret detail /srv/models/private.onnx")

    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return require_data("upfall", "Activity9", "Trial1Cam1.mp4").read_bytes()


@pytest.fixture(scope="module")
def real_jpeg() -> bytes:
    jpegs, _ = jpeg_frames(require_data("upfall", "Activity7", "Trial1Cam1.mp4"), 1, start=30, max_side=320)
    return jpegs[0]


# ----------------------------------------------------------------------------- crafted media


def huge_png(real_jpeg: bytes, side: int = 60000) -> bytes:
    """A real PNG whose (CRC-correct) IHDR claims side x side pixels."""
    bgr = cv2.imdecode(np.frombuffer(real_jpeg, np.uint8), cv2.IMREAD_COLOR)
    png = bytearray(cv2.imencode(".png", bgr)[1].tobytes())
    png[16:24] = struct.pack(">II", side, side)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def huge_jpeg(real_jpeg: bytes, side: int = 60000) -> bytes:
    """A real JPEG whose frame header (SOF0) claims side x side pixels."""
    data = bytearray(real_jpeg)
    i = data.find(b"\xff\xc0")
    assert i > 0
    data[i + 5 : i + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def avi_claiming(src: Path, dst: Path, side: int) -> Path:
    """10 real frames as a tiny MJPEG AVI whose headers (avih, strf, every SOF) claim side x side."""
    cap = cv2.VideoCapture(str(src))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(10):
        ok, bgr = cap.read()
        assert ok
        writer.write(cv2.resize(bgr, (64, 48)))
    writer.release()
    cap.release()
    d = bytearray(dst.read_bytes())
    i = d.find(b"avih")
    d[i + 40 : i + 48] = struct.pack("<II", side, side)
    i = d.find(b"strf")
    d[i + 12 : i + 20] = struct.pack("<ii", side, side)
    i = 0
    while (i := d.find(b"\xff\xc0", i)) >= 0:
        d[i + 5 : i + 9] = struct.pack(">HH", side, side)
        i += 2
    dst.write_bytes(bytes(d))
    return dst


# ----------------------------------------------------------------------------- HTTP


def _error(r: Any) -> tuple[int, str, str, str]:
    """(status, code, message, hint) of an error response of the service's one shape."""
    assert "application/json" in r.headers.get("content-type", ""), r.text[:200]
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return r.status_code, body["error"]["code"], body["error"]["message"], body["error"].get("hint", "")


def _skeletons(frames: list[dict[str, Any]]) -> bytes:
    return json.dumps({"frames": frames}).encode()


def _nan_body() -> bytes:
    world = json.dumps(WORLD).replace("0.01,", "NaN,", 1)
    return ('{"frames": [{"timestamp": 0, "people": [{"world": ' + world + "}]}]}").encode()


def _chunks(total: int, size: int = 64 << 10) -> Iterator[bytes]:
    yield b'{"frames": ['
    sent = 0
    while sent < total:
        yield b'{"timestamp": 0}, ' * (size // 18)
        sent += size


def http_cases(tmp: Path, clip: bytes, jpeg: bytes) -> dict[str, tuple[dict[str, Any], int, str]]:
    """name -> (request kwargs for POST /recognize, expected status, expected code)."""
    src = require_data("upfall", "Activity9", "Trial1Cam1.mp4")
    huge = avi_claiming(src, tmp / "huge.avi", 8192).read_bytes()
    too_big = avi_claiming(src, tmp / "invalid.avi", 60000).read_bytes()
    one_person = [{"timestamp": 0.0, "people": [{"world": WORLD}]}]

    def video(name: str, data: bytes, ctype: str = "video/mp4") -> dict[str, Any]:
        return {"files": {"file": (name, data, ctype)}}

    def js(body: bytes) -> dict[str, Any]:
        return {"content": body, "headers": {"content-type": "application/json"}}

    def person(**fields: Any) -> dict[str, Any]:
        return js(_skeletons([{"timestamp": 0, "people": [fields]}]))

    def frames(*fs: dict[str, Any], **query: Any) -> dict[str, Any]:
        return {**js(_skeletons(list(fs))), "params": query}

    image_only = [{"timestamp": 0, "people": [{"image": [[1, 2]] * 33}]}]
    crowd = [{"id": i, "world": WORLD} for i in range(64)]
    text_json = {"content": b"raw", "headers": {"content-type": "text/plain"}}
    chunked = {"content": _chunks(1 << 20), "headers": {"content-type": "application/json"}}
    bad = "undecodable_video"
    invalid = "invalid_skeleton"
    return {
        "zero-byte video": (video("clip.mp4", b""), 422, bad),
        "truncated real clip (1/3)": (video("cut.mp4", clip[: len(clip) // 3]), 422, bad),
        "truncated real clip (header only)": (video("cut.mp4", clip[:2048]), 422, bad),
        "text sent as video (.mp4)": (video("notes.mp4", b"hello, world\n" * 200), 422, bad),
        "zeros sent as video": (video("zeros.mp4", b"\x00" * 5000), 422, bad),
        "a still image renamed .mp4": (video("photo.mp4", jpeg), 422, "video_too_short"),
        "the video in a field not named file": (
            {"files": {"video": ("clip.mp4", clip[: 1 << 16], "video/mp4")}},
            422,
            "missing_file",
        ),
        "text sent as video (text/plain)": (
            video("a.txt", b"hi", "text/plain"),
            415,
            "unsupported_media_type",
        ),
        "container claims 8192x8192": (video("huge.avi", huge, "video/x-msvideo"), 413, "video_too_large"),
        "container claims 60000x60000": (video("huge.avi", too_big, "video/x-msvideo"), 422, bad),
        "upload over the limit": (video("big.mp4", b"\x00" * (3 << 19)), 413, "too_large"),
        "multipart without a file": ({"files": {"x": (None, "1")}}, 422, "missing_file"),
        "unknown content type": (text_json, 415, "unsupported_media_type"),
        "malformed JSON": (js(b'{"frames": [{"timestamp": 0,'), 422, invalid),
        "JSON nested 100000 deep": (js(b"[" * 100_000), 422, invalid),
        "JSON body over the limit": (js(b" " * (600 << 10)), 413, "too_large"),
        "chunked JSON over the limit": (chunked, 413, "too_large"),
        "no frames": (js(b'{"frames": []}'), 422, invalid),
        "32 landmarks": (person(world=WORLD[:32]), 422, invalid),
        "5 coordinates per landmark": (person(world=[[0, 0, 0, 0, 0]] * 33), 422, invalid),
        "world landmarks with 2 coordinates": (person(world=[[0, 0]] * 33), 422, invalid),
        "landmarks as strings": (person(world=[["a", "b", "c"]] * 33), 422, invalid),
        "people is not a list": (
            js(_skeletons([{"timestamp": 0, "people": {"world": WORLD}}])),
            422,
            invalid,
        ),
        "NaN coordinates": (js(_nan_body()), 422, invalid),
        "NaN visibility": (person(world=WORLD, visibility=[1] * 32 + [float("nan")]), 422, invalid),
        "infinite timestamp": (js(b'{"frames": [{"timestamp": Infinity}]}'), 422, invalid),
        "timestamps not increasing": (frames({"timestamp": 1}, {"timestamp": 0.5}), 422, invalid),
        "frame width 10^12": (frames({"timestamp": 0, "width": 10**12}), 422, invalid),
        "skeletons spanning 10^5 s": (frames(*one_person, {"timestamp": 1e5}), 413, "video_too_long"),
        "64 client tracks over 899 s": (
            frames({"timestamp": 0.0, "people": crowd}, {"timestamp": 899.0, "people": crowd}),
            413,
            "too_many_windows",
        ),
        "image landmarks for a world model": (frames(*image_only), 422, invalid),
        "duplicate client ids": (
            frames({"timestamp": 0, "people": [{"id": 1, "world": WORLD}] * 2}),
            422,
            invalid,
        ),
        "model path instead of a name": (
            frames(*one_person, model="../linear/model.onnx"),
            404,
            "unknown_model",
        ),
        "absolute model path": (frames(*one_person, model="/etc/passwd"), 404, "unknown_model"),
        "unknown model": (frames(*one_person, model="nope"), 404, "unknown_model"),
        "top_k out of range": (frames(*one_person, top_k=10**9), 422, "invalid_request"),
        "top_k zero": (frames(*one_person, top_k=0), 422, "invalid_request"),
    }


# what some answers must also say (the file, the fix, the names a client can use)
SAYS = {
    "text sent as video (.mp4)": "notes.mp4",
    "zeros sent as video": "zeros.mp4",
    "image landmarks for a world model": "world",
    "unknown model": "linear",
    "upload over the limit": "SKELACT_MAX_UPLOAD_MB",
    "a still image renamed .mp4": "photo.mp4 has 1 frame: too short for any window of linear",
    "the video in a field not named file": "'video'",
}
HINTED = {
    "zero-byte video",
    "zeros sent as video",
    "text sent as video (.mp4)",
    "upload over the limit",
    "a still image renamed .mp4",
    "the video in a field not named file",
}


@pytest.fixture(scope="module")
def cases(
    tmp_path_factory: pytest.TempPathFactory, clip_bytes: bytes, real_jpeg: bytes
) -> dict[str, tuple[dict[str, Any], int, str]]:
    return http_cases(tmp_path_factory.mktemp("media"), clip_bytes, real_jpeg)


def test_http_bad_input_corpus(client: TestClient, cases: dict[str, tuple[dict[str, Any], int, str]]) -> None:
    failures = []
    before = _outcomes(client)
    for name, (kwargs, status, code) in cases.items():
        got = _error(client.post("/recognize", **kwargs))
        if got[:2] != (status, code):
            failures.append(f"{name}: expected {status} {code}, got {got}")
        if SAYS.get(name, "") not in got[2] + got[3]:
            failures.append(f"{name}: the answer does not say {SAYS[name]!r}: {got}")
        if name in HINTED and not got[3]:
            failures.append(f"{name}: no hint: {got}")
        ready = client.get("/health/ready")
        assert ready.status_code == 200, f"after {name!r}: {ready.text}"
    assert not failures, "\n".join(failures)
    # every refusal counted under its code, also those refused before the route (413 by length)
    after = _outcomes(client)
    counted = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    assert {c: n for c, n in counted.items() if n} == Counter(code for _, _, code in cases.values())
    # still serving real work: skeletons tracked by the server, and a real (short) video
    good = _skeletons([{"timestamp": i * 0.1, "people": [{"image": PTS, "world": WORLD}]} for i in range(12)])
    r = client.post("/recognize", content=good, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["tracks"], r.text
    metrics = client.get("/metrics").text
    assert 'outcome="too_large"' in metrics and 'outcome="undecodable_video"' in metrics


def test_a_real_video_still_works_after_the_corpus(client: TestClient, tmp_path: Path) -> None:
    clip = trim_video(require_data("upfall", "Activity9", "Trial1Cam1.mp4"), tmp_path / "ok.mp4", frames=6)
    with clip.open("rb") as fh:
        r = client.post("/recognize", files={"file": ("ok.mp4", fh, "video/mp4")})
    assert r.status_code == 200, r.text
    assert r.json()["video"]["frames"] == 6


# ----------------------------------------------------------------------------- WebSocket


def ws_cases(jpeg: bytes) -> list[tuple[str, bytes | str, str]]:
    """(name, message, expected error code)."""
    bmp = cv2.imencode(".bmp", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    rng = np.random.default_rng(0)
    nan = float("nan")
    bad_json = "invalid_json"

    def sk(**fields: Any) -> str:
        return json.dumps({"type": "skeleton", "timestamp": 0.05, **fields})

    return [
        ("text bytes as a frame", b"hello, world", "undecodable_image"),
        ("random bytes as a frame", rng.bytes(4096), "undecodable_image"),
        ("empty binary frame", b"", "undecodable_image"),
        ("GIF header", b"GIF89a" + rng.bytes(64), "undecodable_image"),
        ("a real BMP (not JPEG/PNG/WebP)", bmp, "undecodable_image"),
        ("JPEG cut after 100 bytes", jpeg[:100], "undecodable_image"),
        ("JPEG magic, garbage after", b"\xff\xd8 definitely not a jpeg", "undecodable_image"),
        ("PNG header claiming 60000x60000", huge_png(jpeg), "frame_too_large"),
        ("JPEG header claiming 60000x60000", huge_jpeg(jpeg), "frame_too_large"),
        ("JPEG header claiming 5000x4000", huge_jpeg(jpeg, 5000), "frame_too_large"),
        ("binary frame over the limit", b"\xff\xd8" + b"\x00" * MAX_FRAME_BYTES, "frame_too_large"),
        ("text message over the limit", sk(pad="x" * MAX_MESSAGE_BYTES), "message_too_large"),
        ("malformed JSON", '{"type": "skeleton", "timestamp":', "invalid_json"),
        ("JSON nested 100000 deep", "[" * 60_000, "invalid_json"),
        ("integer with 5000 digits", '{"type": "skeleton", "timestamp": 1' + "0" * 5000 + "}", bad_json),
        ("a JSON array", "[1, 2, 3]", "unknown_message"),
        ("unknown type", '{"type": "selfdestruct"}', "unknown_message"),
        ("32 landmarks", sk(people=[{"world": WORLD[:32]}]), "invalid_message"),
        ("landmarks of 5 numbers", sk(people=[{"world": [[0, 0, 0, 0, 0]] * 33}]), "invalid_message"),
        ("no coordinates", sk(people=[{"visibility": [1] * 33}]), "invalid_message"),
        ("65 people", sk(people=[{"world": WORLD}] * 65), "invalid_message"),
        ("NaN coordinates", sk(people=[{"world": [[float("nan"), 0, 0]] * 33}]), "invalid_skeleton"),
        ("infinite coordinates", sk(people=[{"world": [[float("inf"), 0, 0]] * 33}]), "invalid_skeleton"),
        ("NaN visibility", sk(people=[{"world": WORLD, "visibility": [nan] * 33}]), "invalid_skeleton"),
        ("NaN timestamp", '{"type": "skeleton", "timestamp": NaN, "people": []}', "invalid_message"),
        ("negative timestamp", sk(timestamp=-1), "invalid_message"),
        ("server tracking without image landmarks", sk(people=[{"world": WORLD}]), "invalid_skeleton"),
        ("config naming a path", '{"type": "config", "model": "../../etc/passwd"}', "unknown_model"),
    ]


def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = ws.receive_json()
        if msg["type"] == kind:
            return msg
        assert msg["type"] in ("frame", "hello", "error"), msg


def test_ws_bad_input_corpus_keeps_the_stream_serving(client: TestClient, real_jpeg: bytes) -> None:
    t = 0.0
    failures = []
    with client.websocket_connect("/stream") as ws:
        assert ws.receive_json()["type"] == "hello"
        for k, (name, message, code) in enumerate(ws_cases(real_jpeg)):
            if isinstance(message, bytes):
                ws.send_bytes(message)
            else:
                ws.send_text(message)
            err = ws.receive_json()
            if err.get("type") != "error" or err.get("code") != code or not err.get("message"):
                failures.append(f"{name}: expected {code}, got {err}")
            # the same connection still answers a good skeleton frame
            t += 0.1
            ws.send_json({"type": "skeleton", "timestamp": t, "people": [{"image": PTS, "world": WORLD}]})
            frame = _until(ws, "frame")
            # the server's track is reported once past its probation (3 frames over 0.2 s)
            assert len(frame["tracks"]) == (1 if k >= 2 else 0), (name, frame)
        ws.send_bytes(real_jpeg)  # and a real camera frame
        frame = _until(ws, "frame")
        assert (frame["width"], frame["height"]) == (320, 240)
    assert not failures, "\n".join(failures)
    assert client.get("/health/ready").status_code == 200
    assert "skelact_active_streams 0.0" in client.get("/metrics").text


def test_ws_timestamp_jumps_do_not_stall_the_stream(client: TestClient) -> None:
    """A track's buffer cuts windows over gaps: a jump of 10^6 s must end the track, not make
    millions of windows (client-numbered tracks, then the server's tracker)."""
    person = {"image": PTS, "world": WORLD}
    windows = 'skelact_windows_total{model="linear"}'
    before = _metric(client, windows)
    with client.websocket_connect("/stream") as ws:
        assert ws.receive_json()["type"] == "hello"
        for people, times, jump in (
            ([{"id": 7, **person}], (0.0, 0.1, 1e6, 1e6 + 0.1), 2),
            # the server's tracks are reported once past their probation (3 frames over 0.2 s)
            ([person], (2e6, 2e6 + 0.1, 2e6 + 0.2, 2e6 + 0.3, 3e9, 3e9 + 0.1, 3e9 + 0.2, 3e9 + 0.3), 4),
        ):
            fills = []
            for ts in times:
                ws.send_json({"type": "skeleton", "timestamp": ts, "people": people})
                frame = _until(ws, "frame")
                fills.append(frame["tracks"][0]["window_fill"] if frame["tracks"] else None)
            # after each jump the person is a new track whose window starts filling from zero
            after = [f for f in fills[jump:] if f is not None]
            assert fills[jump - 1] > 0 and after and after[0] == 0.0, fills
    assert _metric(client, windows) - before <= 2  # 0.1 s per track: no window of a gap was cut


@pytest.mark.parametrize("model", ["../linear", "nope"])
def test_ws_connect_with_an_unknown_model_is_refused(client: TestClient, model: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect(f"/stream?model={model}") as ws:
        msg = ws.receive_json()
        assert msg["code"] == "unknown_model" and "linear" in msg["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_stream_rate_limit_is_a_token_bucket_on_the_servers_clock() -> None:
    """`StreamGuard` on explicit times: a burst of 2 s worth, then the rate; errors once a second."""
    guard = StreamGuard(Settings(max_stream_fps=10.0))
    t = guard.rate.t  # the bucket is full from here

    def allowed(times: list[float]) -> int:
        return sum(guard.over_rate(x) is None for x in times)

    assert allowed([t + i * 1e-3 for i in range(100)]) == 20  # 100 in 0.1 s: the burst of 20
    assert allowed([t + 1.1 + i * 1e-6 for i in range(30)]) == 11  # 1 s refills 10 (+ 0.99 left)
    assert allowed([t + 100.0 + i * 1e-6 for i in range(30)]) == 20  # never more than the burst
    assert [guard.should_report(t + dt) for dt in (0.0, 0.5, 0.99, 1.0, 1.5, 2.1)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip


def test_ws_message_rate_is_limited_without_flooding_errors(client: TestClient) -> None:
    """The same bucket on a real connection: the messages over the rate are dropped and counted,
    with far fewer errors than drops (counts only; the bucket's times: the test above)."""
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    old = settings.max_stream_fps
    settings.max_stream_fps = 2.0  # bucket: 4 messages, 2 more per second
    received = 'skelact_frames_received_total{source="stream"}'
    before = _metric(client, received)
    try:
        with client.websocket_connect("/stream") as ws:
            assert ws.receive_json()["type"] == "hello"
            for _ in range(100):
                ws.send_bytes(b"x")  # cheap to refuse, so only the rate limiter decides
            deadline = time.monotonic() + 60
            while _metric(client, received) < before + 100:  # the server has read them all ...
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(1.0)  # ... and 1 s later its bucket has a token again (it needs 0.5 s)
            ws.send_json({"type": "skeleton", "timestamp": 1.0, "people": [{"image": PTS, "world": WORLD}]})
            codes: list[str] = []  # the answers to the 100, all sent before the frame's reply
            while True:
                msg = ws.receive_json()
                if msg["type"] == "frame":
                    break
                codes.append(msg["code"])
    finally:
        settings.max_stream_fps = old
    refused = codes.count("undecodable_image")
    limited = codes.count("rate_limited")
    assert 4 <= refused < 100, codes  # the burst at least, never all of them
    assert 1 <= limited < msg["dropped"] / 4, (limited, msg["dropped"])  # not an error per drop
    assert msg["received"] == 101 and msg["dropped"] == 100 - refused, msg


def _outcomes(client: TestClient) -> dict[str, float]:
    """skelact_recognize_requests_total by outcome."""
    text = client.get("/metrics").text
    found = re.findall(r'^skelact_recognize_requests_total\{outcome="([^"]+)"\} (\S+)$', text, re.M)
    return {outcome: float(n) for outcome, n in found}


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_slow_request_times_out_and_frees_its_slot(client: TestClient, tmp_path: Path) -> None:
    """With every pose slot held (as other clips and streams hold them) the clip cannot finish
    before SKELACT_REQUEST_TIMEOUT_S, however fast the machine: 503 ``timeout``, its slots freed."""
    clip = trim_video(require_data("upfall", "Activity9", "Trial1Cam1.mp4"), tmp_path / "slow.mp4", frames=6)
    state = client.app.state.service  # type: ignore[attr-defined]
    settings, pose_slots = state.settings, state.pose.slots
    old = settings.request_timeout_s
    settings.request_timeout_s = 0.5
    client.portal.call(pose_slots.take, pose_slots.count)  # type: ignore[union-attr]
    try:
        with clip.open("rb") as fh:
            r = client.post("/recognize", files={"file": ("slow.mp4", fh, "video/mp4")})
    finally:
        settings.request_timeout_s = old
        client.portal.call(pose_slots.give, pose_slots.count)  # type: ignore[union-attr]
    assert _error(r)[:2] == (503, "timeout"), r.text
    assert 'skelact_recognize_requests_total{outcome="cancelled"}' in client.get("/metrics").text
    # the clip slots were released: as many clips as allowed run again at once
    admission = state.clip_admission
    deadline = time.monotonic() + 60
    while admission.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (admission.running, admission.waiting) == (0, 0)
    assert "skelact_active_clips 0.0" in client.get("/metrics").text
    assert pose_slots.free == pose_slots.count  # the cancelled clip holds no pose slot either
    good = _skeletons([{"timestamp": 0.0, "people": []}])
    assert (
        client.post("/recognize", content=good, headers={"content-type": "application/json"}).status_code
        == 200
    )
    with clip.open("rb") as fh:
        r = client.post("/recognize", files={"file": ("ok.mp4", fh, "video/mp4")})
    assert r.status_code == 200 and r.json()["video"]["frames"] == 6, r.text


def test_internal_errors_carry_an_id_and_no_trace(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="service.core.errors"):
        r = client.get("/_test/boom")
    assert r.status_code == 500
    body = r.json()["error"]
    assert body["code"] == "internal_error" and len(body["error_id"]) == 12
    assert body["error_id"] in body["message"]
    assert "secret" not in r.text and "RuntimeError" not in r.text and "Traceback" not in r.text
    logged = [rec for rec in caplog.records if body["error_id"] in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the trace stays in the server's log
    assert client.get("/health/ready").status_code == 200
