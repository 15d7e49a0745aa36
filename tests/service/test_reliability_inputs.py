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
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
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


def _error(r: Any) -> tuple[int, str, str]:
    assert "application/json" in r.headers.get("content-type", ""), r.text[:200]
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return r.status_code, body["error"]["code"], body["error"]["message"]


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
        "top_k out of range": (frames(*one_person, top_k=10**9), 422, "invalid_request"),
    }


@pytest.fixture(scope="module")
def cases(
    tmp_path_factory: pytest.TempPathFactory, clip_bytes: bytes, real_jpeg: bytes
) -> dict[str, tuple[dict[str, Any], int, str]]:
    return http_cases(tmp_path_factory.mktemp("media"), clip_bytes, real_jpeg)


def test_http_bad_input_corpus(client: TestClient, cases: dict[str, tuple[dict[str, Any], int, str]]) -> None:
    failures = []
    for name, (kwargs, status, code) in cases.items():
        got = _error(client.post("/recognize", **kwargs))
        if got[:2] != (status, code):
            failures.append(f"{name}: expected {status} {code}, got {got}")
        ready = client.get("/health/ready")
        assert ready.status_code == 200, f"after {name!r}: {ready.text}"
    assert not failures, "\n".join(failures)
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
        for name, message, code in ws_cases(real_jpeg):
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
            assert len(frame["tracks"]) == 1, (name, frame)
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
    with client.websocket_connect("/stream") as ws:
        assert ws.receive_json()["type"] == "hello"
        for people, times in (
            ([{"id": 7, **person}], (0.0, 0.1, 1e6, 1e6 + 0.1)),
            ([person], (2e6, 2e6 + 0.1, 3e9)),
        ):
            fills = []
            for ts in times:
                t0 = time.monotonic()
                ws.send_json({"type": "skeleton", "timestamp": ts, "people": people})
                frame = _until(ws, "frame")
                assert time.monotonic() - t0 < 5, ts
                fills.append(frame["tracks"][0]["window_fill"])
            # after each jump the person is a new track whose window starts filling from zero
            assert fills[1] > 0 and fills[2] == 0.0, fills


def test_ws_connect_with_a_model_path_is_refused(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client.websocket_connect("/stream?model=../linear") as ws:
        msg = ws.receive_json()
        assert msg["code"] == "unknown_model" and "linear" in msg["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_ws_message_rate_is_limited_without_flooding_errors(client: TestClient) -> None:
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    old = settings.max_stream_fps
    settings.max_stream_fps = 10.0  # bucket: 20 messages, 10 more per second
    try:
        with client.websocket_connect("/stream") as ws:
            assert ws.receive_json()["type"] == "hello"
            t0 = time.monotonic()
            for _ in range(100):
                ws.send_bytes(b"x")  # cheap to refuse, so only the rate limiter decides
            sent_in = time.monotonic() - t0
            time.sleep(1.2)
            ws.send_json({"type": "skeleton", "timestamp": 1.0, "people": [{"image": PTS, "world": WORLD}]})
            codes: list[str] = []
            while True:
                msg = ws.receive_json()
                if msg["type"] == "frame":
                    break
                codes.append(msg["code"])
    finally:
        settings.max_stream_fps = old
    refused = codes.count("undecodable_image")
    limited = codes.count("rate_limited")
    # ~20 burst + what refilled while sending; the rest dropped with one error a second at most
    assert 20 <= refused <= 20 + 10 * sent_in + 2, (refused, sent_in)
    assert 1 <= limited <= 1 + sent_in, codes
    assert msg["received"] == 101 and msg["dropped"] == 100 - refused, msg


def test_slow_request_times_out_and_frees_its_slot(client: TestClient, tmp_path: Path) -> None:
    clip = trim_video(require_data("upfall", "Activity9", "Trial1Cam1.mp4"), tmp_path / "slow.mp4", frames=40)
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    old = settings.request_timeout_s
    settings.request_timeout_s = 0.5
    try:
        t0 = time.monotonic()
        with clip.open("rb") as fh:
            r = client.post("/recognize", files={"file": ("slow.mp4", fh, "video/mp4")})
        took = time.monotonic() - t0
    finally:
        settings.request_timeout_s = old
    assert _error(r)[:2] == (503, "timeout") and took < 10, (r.text, took)
    assert 'skelact_recognize_requests_total{outcome="cancelled"}' in client.get("/metrics").text
    # the clip slots were released: as many clips as allowed run again at once
    admission = client.app.state.service.clip_admission  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while admission.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (admission.running, admission.waiting) == (0, 0)
    assert "skelact_active_clips 0.0" in client.get("/metrics").text
    good = _skeletons([{"timestamp": 0.0, "people": []}])
    assert (
        client.post("/recognize", content=good, headers={"content-type": "application/json"}).status_code
        == 200
    )


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
