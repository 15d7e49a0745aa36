"""WS /stream on the real app with real clips: the hello/frame/error schema, tracks and timings,
latest-frame-wins dropping when the client sends too fast, recoverable errors, model switching
and JSON skeleton frames."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from conftest import require_data
from fastapi.testclient import TestClient
from service_helpers import jpeg_frames, wait_ready, write_linear_model

from service.app import create_app
from service.schemas import ErrorMessage, FrameMessage, HelloMessage
from service.settings import Settings

LABELS = ["stand", "walk", "fall", "sit"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    zoo = tmp_path_factory.mktemp("zoo")
    # a short window (8 frames at 10 fps) so a label appears within a second of stream time
    write_linear_model(zoo / "linear", LABELS, length=8, fps=10, stride=2)
    write_linear_model(zoo / "other", ["a", "b"], length=16, fps=15, stride=4, seed=5)
    settings = Settings(
        models_dir=zoo, default_model="linear", providers=["cpu"], enter_threshold=0.3, exit_threshold=0.2
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def frames() -> tuple[list[bytes], float]:
    return jpeg_frames(require_data("upfall", "Activity1", "Trial1Cam1.mp4"), 40, start=10)


def _frame(ws: Any) -> FrameMessage:
    while True:
        msg = ws.receive_json()
        if msg["type"] == "frame":
            return FrameMessage.model_validate(msg)
        assert msg["type"] != "error", msg


def test_stream_real_clip_frame_by_frame(client: TestClient, frames: tuple[list[bytes], float]) -> None:
    jpegs, fps = frames
    with client.websocket_connect("/stream?model=linear&top_k=2") as ws:
        hello = HelloMessage.model_validate(ws.receive_json())
        assert hello.model == "linear" and hello.labels == LABELS and hello.provider == "cpu"
        assert (hello.window.length, hello.window.fps, hello.window.stride) == (8, 10, 2)
        replies = []
        t0 = time.monotonic()
        for i, jpg in enumerate(jpegs[:16]):
            # pace at the clip's frame rate (the server stamps binary frames on arrival)
            time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            ws.send_bytes(jpg)
            replies.append(_frame(ws))
    assert [r.frame_id for r in replies] == list(range(16))
    assert all(r.dropped == 0 and r.processed == r.frame_id + 1 == r.received for r in replies)
    assert all(b.timestamp > a.timestamp for a, b in pairwise(replies))
    last = replies[-1]
    assert (last.width, last.height) == (640, 480)
    assert len(last.tracks) >= 1
    track = last.tracks[0]
    assert len(track.landmarks) == 33 and all(len(p) == 3 for p in track.landmarks)
    x0, y0, x1, y1 = track.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    inside = [p for p in track.landmarks if p[2] > 0.5]
    # the box is the landmarks' extent clipped to the frame (MediaPipe may place joints off-frame)
    clipped = [(min(max(p[0], 0), 640), min(max(p[1], 0), 480)) for p in inside]
    out = [p for p in clipped if not (x0 - 1 <= p[0] <= x1 + 1 and y0 - 1 <= p[1] <= y1 + 1)]
    assert inside and not out, (track.box, out)
    # the window filled up, so the track got scores, a label and a start event
    assert track.window_fill == 1.0 and len(track.top) == 2 and track.top[0].label in LABELS
    labelled = [t.label for r in replies for t in r.tracks if t.label is not None]
    assert labelled, "no label after a full window"
    starts = [e for r in replies for e in r.events if e.type == "start"]
    assert starts and starts[0].label in LABELS and starts[0].track_id == track.track_id
    for r in replies:
        t = r.timings_ms
        assert t.pose > 0 and t.decode > 0 and t.total >= t.pose and t.latency >= t.total * 0.5


def test_too_fast_client_gets_latest_frames_and_drop_counts(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    jpegs, _ = frames
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        for jpg in jpegs:  # 40 frames as fast as the socket takes them
            ws.send_bytes(jpg)
        replies: list[FrameMessage] = []
        while not replies or replies[-1].frame_id != len(jpegs) - 1:
            replies.append(_frame(ws))
    last = replies[-1]
    assert last.received == len(jpegs) and last.dropped > 0
    assert last.processed == len(replies) and last.processed + last.dropped == last.received
    assert len(replies) < len(jpegs) / 2, "stale frames should have been dropped"
    ids = [r.frame_id for r in replies]
    assert ids == sorted(ids)
    # latency stays bounded: a reply never waits for a backlog of stale frames
    worst = max(r.timings_ms.latency for r in replies)
    slowest_frame = max(r.timings_ms.total for r in replies)
    assert worst < 3 * slowest_frame + 500, (worst, slowest_frame)
    assert "skelact_frames_dropped_total" in client.get("/metrics").text


def test_errors_are_recoverable_and_config_switches_model(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    jpegs, _ = frames
    with client.websocket_connect("/stream") as ws:
        assert ws.receive_json()["model"] == "linear"
        ws.send_text("not json")
        assert ErrorMessage.model_validate(ws.receive_json()).code == "invalid_json"
        ws.send_bytes(b"\xff\xd8 definitely not a jpeg")
        err = ErrorMessage.model_validate(ws.receive_json())
        assert err.code == "undecodable_image" and "JPEG" in err.message
        ws.send_json({"type": "bogus"})
        assert ws.receive_json()["code"] == "unknown_message"
        ws.send_json({"type": "config", "model": "nope"})
        assert ws.receive_json()["code"] == "unknown_model"
        ws.send_bytes(jpegs[0])  # still open and serving
        assert _frame(ws).received == 2
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        linear, other = registry.get("linear").batcher, registry.get("other").batcher
        assert (linear.producers, other.producers) == (1, 0)  # this stream feeds the linear model
        ws.send_json({"type": "config", "model": "other"})
        hello = HelloMessage.model_validate(ws.receive_json())
        assert hello.model == "other" and hello.labels == ["a", "b"] and hello.window.length == 16
        assert (linear.producers, other.producers) == (0, 1)
    deadline = time.monotonic() + 10
    while other.producers and time.monotonic() < deadline:  # the server closes the session after
        time.sleep(0.05)
    assert (linear.producers, other.producers) == (0, 0)


def test_skeleton_frames_with_client_track_ids(client: TestClient) -> None:
    pts = [[300.0 + 2 * j, 100.0 + 8 * j, 0.0] for j in range(33)]
    world = [[0.01 * j, 0.02 * j, 0.0] for j in range(33)]
    with client.websocket_connect("/stream?model=other") as ws:  # 2 labels: one is always above 0.3
        ws.receive_json()
        for i in range(12):
            ws.send_json(
                {
                    "type": "skeleton",
                    "timestamp": i * 0.1,
                    "width": 640,
                    "height": 480,
                    "people": [{"id": 42, "image": pts, "world": world}],
                }
            )
            msg = _frame(ws)
        assert [t.track_id for t in msg.tracks] == [42]
        assert msg.tracks[0].window_fill == 1.0 and msg.tracks[0].top and msg.tracks[0].label in ("a", "b")
        assert msg.timestamp == pytest.approx(1.1)
        ws.send_json({"type": "skeleton", "timestamp": 2.0, "people": [{"id": 1, "image": pts[:3]}]})
        assert ws.receive_json()["code"] == "invalid_message"
        # the person leaves: after a second unseen the track ends (its label too) and is freed
        msg = None
        for i in range(13):
            ws.send_json({"type": "skeleton", "timestamp": 2.0 + i * 0.1, "people": []})
            msg = _frame(ws)
            if msg.events:
                break
        assert msg is not None and msg.tracks == []
        assert [(e.type, e.track_id) for e in msg.events] == [("end", 42)] and msg.timestamp > 2.1
        assert "skelact_active_tracks 0.0" in client.get("/metrics").text


def test_connect_refusals(client: TestClient) -> None:
    with client.websocket_connect("/stream?model=nope") as ws:
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["code"] == "unknown_model" and "linear" in msg["message"]


def test_two_streams_in_parallel(client: TestClient, frames: tuple[list[bytes], float]) -> None:
    """Two connections at once: both are served, pose runs on separate estimators."""
    import threading

    jpegs, _ = frames
    results: dict[int, list[FrameMessage]] = {}

    def run(k: int) -> None:
        with client.websocket_connect("/stream") as ws:
            ws.receive_json()
            out = []
            for jpg in jpegs[k * 8 : k * 8 + 8]:
                ws.send_bytes(jpg)
                out.append(_frame(ws))
            results[k] = out

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [0, 1] and all(len(v) == 8 for v in results.values())
    assert all(r.tracks for v in results.values() for r in v[2:])


def test_streams_start_on_a_prebuilt_pose_stage_and_share_the_pose_slots(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """A connecting stream takes the spare stage built at start-up (no MediaPipe graph build on
    the connect path); a fresh spare replaces it; the spare is never one a stream used before."""
    state = client.app.state.service  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while len(state._spare_stages) < state.settings.pose_spares and time.monotonic() < deadline:
        time.sleep(0.05)
    spare = state._spare_stages[-1]
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        ws.send_bytes(frames[0][0])
        assert _frame(ws).tracks
        deadline = time.monotonic() + 30
        while len(state._spare_stages) < state.settings.pose_spares and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state._spare_stages and spare not in state._spare_stages  # taken, and replaced
    # every pose slot is free again once the stream is done
    assert state.pose_slots._value == state.settings.pose_workers


def test_pose_lanes_alternate_estimators_and_keep_one_track(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """Two frames of one stream in pose at once, each on its own estimator (two cores for one
    stream); tracking afterwards in frame order keeps the person on one track."""
    import asyncio

    from service.streaming import Arrival, StreamSession

    state = client.app.state.service  # type: ignore[attr-defined]
    model = state.registry.get("linear")
    jpegs, fps = frames

    async def run() -> list[FrameMessage]:
        session = StreamSession(model, state.settings, state.pose_pool, state.metrics,
                                stage_factory=state.take_pose_stage)
        await session.open()
        assert session.lanes == 2
        replies = []
        try:
            for i in range(0, 12, 2):
                pair = [Arrival(i + k, session.started + (i + k) / fps, image=jpegs[i + k]) for k in (0, 1)]
                stamps = [session.stamp(a) for a in pair]
                posed = await asyncio.gather(*(session.pose(a, t, lane) for lane, (a, t) in
                                               enumerate(zip(pair, stamps, strict=True))))
                for a, t, p in zip(pair, stamps, posed, strict=True):
                    replies.append(await session.finish(a, t, p, (i + 2, len(replies) + 1, 0), 0.0))
            assert len(session._lane_stages) == 1  # lane 1 got its own estimator
            assert session._lane_stages[0].estimator is not session.stage.estimator
        finally:
            await session.close()
        return replies

    replies = client.portal.call(run)  # type: ignore[union-attr]
    assert [r.frame_id for r in replies] == list(range(12))
    assert all(b.timestamp > a.timestamp for a, b in pairwise(replies))
    assert all(len(r.tracks) == 1 for r in replies)
    assert len({r.tracks[0].track_id for r in replies}) == 1


def test_extra_lanes_only_when_the_server_has_spare_workers() -> None:
    import asyncio

    from service.api.stream import _Lanes

    async def run() -> list[int]:
        lanes = _Lanes(2)
        first = await lanes.take(extra=False)
        waiter = asyncio.ensure_future(lanes.take(extra=False))  # lane 1 is free but not allowed
        await asyncio.sleep(0.05)
        assert not waiter.done()
        lanes.give_back(first)
        second = await asyncio.wait_for(waiter, 1)
        third = await lanes.take(extra=True)  # many workers free: lane 1 may be used
        return [first, second, third]

    assert asyncio.run(run()) == [0, 0, 1]
