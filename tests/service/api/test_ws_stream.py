"""WS /stream on the real app with real clips: the hello/frame/error schema, tracks and timings,
latest-frame-wins dropping when the client sends too fast, recoverable errors, model switching
and JSON skeleton frames."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.frames import PosedFrame
from service.metrics import Metrics
from service.schemas import ErrorMessage, FrameMessage, HelloMessage
from service.streams.clock import CAPTURE_MAGIC, capture_prefix
from service.streams.inbox import Arrival, Inbox
from tests.conftest import require_data
from tests.service_helpers import jpeg_frames, wait_ready, write_linear_model

LABELS = ["stand", "walk", "fall", "sit"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    zoo = tmp_path_factory.mktemp("zoo")
    # a short window (8 frames at 10 fps) so a label appears within a second of stream time
    write_linear_model(zoo / "linear", LABELS, length=8, fps=10, stride=2)
    write_linear_model(zoo / "other", ["a", "b"], length=16, fps=15, stride=4, seed=5)
    settings = Settings(
        models_dir=zoo,
        default_model="linear",
        providers=["cpu"],
        enter_threshold=0.3,
        exit_threshold=0.2,
        pose_workers=2,  # two lanes, or a solo stream's frames on two threads, on any machine
        stream_max_queue_ms=600_000,  # frames are never dropped for their age here, however loaded
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
    """Each frame carries its capture time (the clip's own, `service.streams.clock`) and is sent
    once the previous one is answered: the window clock runs on those times however fast the
    server is, so the 0.8 s window fills at the 15th frame on any machine."""
    jpegs, fps = frames
    times = [i / fps for i in range(18)]  # 18 frames at 18 fps span 0.94 s: the 0.8 s window fills
    with client.websocket_connect("/stream?model=linear&top_k=2") as ws:
        hello = HelloMessage.model_validate(ws.receive_json())
        assert hello.model == "linear" and hello.labels == LABELS and hello.provider == "cpu"
        assert (hello.window.length, hello.window.fps, hello.window.stride) == (8, 10, 2)
        replies = []
        for t, jpg in zip(times, jpegs, strict=False):
            ws.send_bytes(capture_prefix(t) + jpg)
            replies.append(_frame(ws))
    assert [r.frame_id for r in replies] == list(range(18))
    assert all(r.dropped == 0 and r.processed == r.frame_id + 1 == r.received for r in replies)
    assert [r.timestamp for r in replies] == [round(t, 4) for t in times]  # the client's clock
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
    assert times[0] < starts[0].time <= times[-1]  # events are dated on the same clock
    for r in replies:
        t = r.timings_ms
        assert t.pose > 0 and t.decode > 0 and t.total >= t.pose and t.latency >= t.total * 0.5
        assert 0 <= t.queue <= t.latency  # arrival -> pose start: part of the latency


def test_capture_times_are_checked_as_frames_arrive(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """Each refused time gets ``invalid_timestamp`` naming the frame; the stream goes on."""
    jpg = frames[0][0]
    refused = {
        "same time again": capture_prefix(1.0) + jpg,
        "earlier": capture_prefix(0.5) + jpg,
        "NaN": capture_prefix(float("nan")) + jpg,
        "negative": capture_prefix(-1.0) + jpg,
        "milliseconds since 1970": capture_prefix(1.7e12) + jpg,
        "prefix cut short": CAPTURE_MAGIC + b"\x00\x01",
        "no capture time after frames with one": jpg,
    }
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        ws.send_bytes(capture_prefix(1.0) + jpg)
        assert _frame(ws).timestamp == 1.0
        for i, (name, data) in enumerate(refused.items(), start=1):
            ws.send_bytes(data)
            err = ErrorMessage.model_validate(ws.receive_json())
            assert err.code == "invalid_timestamp" and f"frame {i}:" in err.message, (name, err)
        ws.send_bytes(capture_prefix(1.25) + jpg)
        reply = _frame(ws)
        assert reply.timestamp == 1.25 and reply.frame_id == len(refused) + 1
        ws.send_bytes(capture_prefix(1.5) + jpg)
        assert _frame(ws).tracks  # seen a third time, 0.5 s after the first: past the probation
    with client.websocket_connect("/stream") as ws:  # the first frame had none: none after it either
        HelloMessage.model_validate(ws.receive_json())
        ws.send_bytes(jpg)
        assert _frame(ws).received == 1
        ws.send_bytes(capture_prefix(5.0) + jpg)
        err = ErrorMessage.model_validate(ws.receive_json())
        assert err.code == "invalid_timestamp" and "earlier frames had no" in err.message


def _hold_up(client: TestClient, ws: Any, jpg: bytes, seconds: float) -> None:
    """Send ``jpg`` while every pose slot is held (as clips and other streams hold them), and
    free them ``seconds`` after the frame has arrived (seen in the metrics): it waits that long."""
    slots = client.app.state.service.pose.slots  # type: ignore[attr-defined]
    received = 'skelact_frames_received_total{source="stream"}'
    received_before = _metric(client, received)
    client.portal.call(slots.take, slots.count)  # type: ignore[union-attr]
    try:
        ws.send_bytes(jpg)
        deadline = time.monotonic() + 60
        while _metric(client, received) < received_before + 1:
            assert time.monotonic() < deadline, "the frame never arrived"
            time.sleep(0.02)
        time.sleep(seconds)
    finally:
        client.portal.call(slots.give, slots.count)  # type: ignore[union-attr]


def test_a_frame_that_waits_too_long_for_pose_is_dropped_and_said(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """SKELACT_STREAM_MAX_QUEUE_MS: with every pose slot held (as clips and other streams hold them),
    a frame waits; past the bound it is dropped unposed, counted, and its client told."""
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    jpegs, _ = frames
    bound_ms, old = 300.0, settings.stream_max_queue_ms
    settings.stream_max_queue_ms = bound_ms
    expired_before = _metric(client, "skelact_frames_expired_total")
    try:
        with client.websocket_connect("/stream") as ws:
            HelloMessage.model_validate(ws.receive_json())
            _hold_up(client, ws, jpegs[0], bound_ms / 1e3)  # it is older than the bound (at least) ...
            err = ErrorMessage.model_validate(ws.receive_json())  # ... when its pose would start
            assert err.code == "frame_expired" and "frame 0 waited" in err.message, err
            assert "SKELACT_STREAM_MAX_QUEUE_MS" in err.message
            ws.send_bytes(jpegs[1])  # the next one, not held up, is answered
            reply = _frame(ws)
    finally:
        settings.stream_max_queue_ms = old
    assert (reply.frame_id, reply.received, reply.processed, reply.dropped) == (1, 2, 1, 1)
    assert reply.timings_ms.queue < bound_ms
    assert _metric(client, "skelact_frames_expired_total") == expired_before + 1


def test_a_client_waiting_for_a_slow_reply_is_not_idle(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """SKELACT_STREAM_IDLE_TIMEOUT_S counts only while no frame of the client's waits, and from its
    reply: a frame held up longer than the timeout (every pose slot taken) is answered, not closed
    as idle (its ``timings_ms.queue`` is the time it was held up), and a client that sends its next
    frame half a timeout after each reply is never idle (the two live tests' clients under load)."""
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    old = settings.stream_idle_timeout_s
    settings.stream_idle_timeout_s = 0.6
    try:
        with client.websocket_connect("/stream") as ws:
            HelloMessage.model_validate(ws.receive_json())
            _hold_up(client, ws, frames[0][0], 2.0)  # over three idle timeouts while the frame waits
            held = _frame(ws)
            assert held.received == 1 and held.timings_ms.queue >= 2000.0, held.timings_ms
            for k in range(1, 6):  # the stream was not closed meanwhile: it goes on
                time.sleep(0.3)
                ws.send_bytes(frames[0][k])
                assert _frame(ws).received == k + 1
            assert ErrorMessage.model_validate(ws.receive_json()).code == "idle_timeout"  # then idle
    finally:
        settings.stream_idle_timeout_s = old


def test_a_stream_is_quiet_only_from_its_last_reply() -> None:
    """`Inbox.quiet_for`, the idle clock: 0 while a frame of the client's waits or is in work,
    then the time since its reply."""
    box = Inbox(Metrics())
    box.offer(Arrival(0, 1.0, image=b"jpeg"))
    assert box.quiet_for(100.0) == 0.0  # waiting for a pose slot
    box.pending = None
    box.working += 1  # taken by the scheduler
    assert box.quiet_for(100.0) == 0.0
    box.answered()
    assert box.working == 0 and box.quiet_for(box.answered_at + 0.25) == 0.25


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
        ws.send_bytes(jpegs[0])  # still open and serving
        assert _frame(ws).received == 2
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        linear, other = registry.get("linear").batcher, registry.get("other").batcher
        assert (linear.producers, other.producers) == (1, 0)  # this stream feeds the linear model
        ws.send_json({"type": "config", "model": "other"})
        hello = HelloMessage.model_validate(ws.receive_json())
        assert hello.model == "other" and hello.labels == ["a", "b"] and hello.window.length == 16
        assert (linear.producers, other.producers) == (0, 1)
    deadline = time.monotonic() + 60
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


def test_streams_start_on_a_prebuilt_pose_stage_and_share_the_pose_slots(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """A connecting stream takes the spare stages built at start-up (no MediaPipe graph build on
    the connect path): a single-threaded one for its lanes and, alone on the server, the solo one.
    Fresh spares replace them only once no stream is open: a graph build holds the GIL and would
    stall the open streams' frames. A spare is never one a stream used before."""
    state = client.app.state.service  # type: ignore[attr-defined]
    solo = state.settings.solo_threads
    wanted = {1: state.settings.pose_spares, solo: 1}

    def spares() -> dict[int, list[object]]:
        return {threads: list(state.pose._spares.get(threads, [])) for threads in wanted}

    def spares_refilled() -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(len(v) == wanted[k] for k, v in spares().items()):
                return True
            time.sleep(0.05)
        return False

    assert solo == 2 and spares_refilled()
    before = spares()
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        ws.send_bytes(frames[0][0])
        assert _frame(ws).frame_id == 0  # posed (a track is reported only after its probation)
        time.sleep(0.5)
        assert spares() == {1: [], solo: []}  # both taken, none rebuilt while the stream is open
    assert spares_refilled()
    after = spares()
    assert all(stage not in after[k] for k, v in before.items() for stage in v)
    # every pose slot is free again once the stream is done
    assert state.pose.slots.free == state.settings.pose_workers


def test_pose_lanes_alternate_estimators_and_keep_one_track(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """Two frames of one stream in pose at once, each on its own estimator (two cores for one
    stream); tracking afterwards in frame order keeps the person on one track."""
    import asyncio

    from service.streams.session import StreamSession

    state = client.app.state.service  # type: ignore[attr-defined]
    model = state.registry.get("linear")
    jpegs, fps = frames

    async def run() -> list[FrameMessage]:
        session = StreamSession(model, state.settings, state.pose, state.metrics)
        await session.open()
        assert session.lanes == 2
        replies = []
        try:
            for i in range(0, 12, 2):
                pair = [Arrival(i + k, session.started + (i + k) / fps, image=jpegs[i + k]) for k in (0, 1)]
                stamps = [session.stamp(a) for a in pair]
                posed = await asyncio.gather(*(session.pose(a, t, lane) for lane, (a, t) in
                                               enumerate(zip(pair, stamps, strict=True))))
                for a, p in zip(pair, posed, strict=True):
                    replies.append(await session.reply(a, p, (i + 2, len(replies) + 1, 0), 0.0))
            assert len(session.lane_estimators) == 2  # lane 1 got its own estimator
            assert session.lane_estimators[1] is not session.lane_estimators[0]
        finally:
            await session.close()
        return replies

    replies = client.portal.call(run)  # type: ignore[union-attr]
    assert [r.frame_id for r in replies] == list(range(12))
    assert all(b.timestamp > a.timestamp for a, b in pairwise(replies))
    # one person, one track, reported from the end of its probation (3 frames over 0.2 s) on
    confirmed = replies[0].timestamp + 0.2
    assert all(len(r.tracks) == 1 for r in replies if r.timestamp >= confirmed + 1e-3)
    assert len({t.track_id for r in replies for t in r.tracks}) == 1


def test_a_stream_switching_between_lane_and_solo_is_posed_as_on_one_estimator(client: TestClient) -> None:
    """A stream's frames on its single-threaded lane and its solo (two-thread) estimator in turn
    (`Pace` switches by timing): each switch hands the tracked ROIs over, so the people found
    are bitwise those of one estimator posing every frame, whatever the timing chose. A walker
    entering the view (without the hand-over 8 of these 36 frames differ)."""

    from perception.video import decode_image
    from service.streams.session import StreamSession

    state = client.app.state.service  # type: ignore[attr-defined]
    model = state.registry.get("linear")
    jpegs, fps = jpeg_frames(require_data("upfall", "Activity6", "Trial1Cam1.mp4"), 36)

    async def run() -> list[PosedFrame]:
        session = StreamSession(model, state.settings, state.pose, state.metrics)
        await session.open()
        await session.open_solo()
        assert session.solo_ready()
        posed = []
        try:
            for i, jpg in enumerate(jpegs):
                arrival = Arrival(i, session.started + i / fps, image=jpg)
                posed.append(await session.pose(arrival, session.stamp(arrival), 0, solo=(i // 4) % 2 == 1))
        finally:
            await session.close()
        return posed

    posed = client.portal.call(run)  # type: ignore[union-attr]
    one = state.pose.new_estimator()
    try:
        alone = [one.estimate(decode_image(jpg), p.timestamp) for jpg, p in zip(jpegs, posed, strict=True)]
    finally:
        one.close()
    assert sum(len(p.poses) for p in posed) >= len(jpegs) // 2  # the walker, once in view
    for p, q in zip(posed, alone, strict=True):
        assert len(p.poses) == len(q)
        assert all(np.array_equal(a.image, b.image) for a, b in zip(p.poses, q, strict=True))


def test_extra_lanes_only_when_the_server_has_spare_workers() -> None:
    import asyncio

    from service.streams.pacing import Lanes

    async def run() -> list[int]:
        lanes = Lanes(2)
        first = await lanes.take(extra=False)
        waiter = asyncio.ensure_future(lanes.take(extra=False))  # lane 1 is free but not allowed
        await asyncio.sleep(0.05)
        assert not waiter.done()
        lanes.give_back(first)
        second = await asyncio.wait_for(waiter, 1)
        third = await lanes.take(extra=True)  # many workers free: lane 1 may be used
        return [first, second, third]

    assert asyncio.run(run()) == [0, 0, 1]


def _metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _solo_frames(client: TestClient) -> float:
    return _metric(client, "skelact_solo_pose_frames_total")


def test_a_stream_starts_single_threaded_even_when_alone(
    client: TestClient, frames: tuple[list[bytes], float]
) -> None:
    """The server's only stream poses its first frames on its single-threaded lane 0, not solo:
    a cold two-thread pose call beside any other process took seconds (the first reply of an
    UP-Fall stream came 3.1 s late and its fall was missed); solo is probed later (`Pace`)."""
    from service.streams.pacing import SOLO_PROBE_EVERY

    state = client.app.state.service  # type: ignore[attr-defined]
    assert state.settings.solo_threads == 2 and SOLO_PROBE_EVERY > 3
    assert _solo_frames_of_a_stream(client, frames[0][:3]) == 0
    assert state.pose.slots.free == state.settings.pose_workers


def _solo_frames_of_a_stream(client: TestClient, jpegs: list[bytes]) -> float:
    """Solo frames while a new stream sends ``jpegs``, one reply at a time (each posed: its track
    is reported only after its probation)."""
    before = _solo_frames(client)
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        for jpeg in jpegs:
            ws.send_bytes(jpeg)
            assert _frame(ws).timings_ms.pose > 0
    return _solo_frames(client) - before


def test_a_solo_stream_runs_on_every_pose_core_until_it_has_company(
    client: TestClient, frames: tuple[list[bytes], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With solo due at once (SOLO_PROBE_EVERY = 0) the server's only stream poses solo: holding
    every pose slot, on a two-thread estimator (later frames follow `Pace`, measured times: see the
    next tests). A clip in pose or a second stream keeps it on its single-threaded lanes; alone
    again, a new stream poses solo."""
    from service.outside_load import OutsideLoad
    from service.streams import pacing

    monkeypatch.setattr(pacing, "SOLO_PROBE_EVERY", 0)
    state = client.app.state.service  # type: ignore[attr-defined]
    assert state.settings.solo_threads == 2
    # a machine with no other process on its cores (this one is shared: see the next test)
    ticks = iter(range(10**6))
    monkeypatch.setattr(state.pose, "outside", OutsideLoad(busy=lambda: 0.0, clock=lambda: next(ticks)))
    jpegs, _ = frames

    def send(ws: Any, k: int) -> bool:
        """Whether frame ``k`` was posed (its track is reported only after its probation)."""
        ws.send_bytes(jpegs[k])
        return _frame(ws).timings_ms.pose > 0

    before = _solo_frames(client)
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        assert send(ws, 0)
        assert _solo_frames(client) == before + 1
        with client.portal.wrap_async_context_manager(state.pose.clip_in_pose()):  # type: ignore[union-attr]
            assert state.pose.clips_in_pose == 1
            assert all(send(ws, k) for k in (1, 2))
        with client.websocket_connect("/stream") as other:
            HelloMessage.model_validate(other.receive_json())
            assert send(ws, 3) and send(other, 4) and send(other, 5)
        assert _solo_frames(client) == before + 1  # beside a clip or a stream: one thread, one slot
    with client.websocket_connect("/stream") as ws:
        HelloMessage.model_validate(ws.receive_json())
        assert send(ws, 6)
        assert _solo_frames(client) == before + 2  # alone again
    assert state.pose.slots.free == state.settings.pose_workers


def test_no_solo_beside_a_busy_process(
    client: TestClient, frames: tuple[list[bytes], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With solo due at once, a real process spinning on a core beside the server keeps the stream
    single-threaded (`service.outside_load`): a two-thread call sharing its cores took seconds."""
    import subprocess
    import sys

    from service.outside_load import SOLO_MAX_OUTSIDE_CORES, OutsideLoad
    from service.streams import pacing

    monkeypatch.setattr(pacing, "SOLO_PROBE_EVERY", 0)
    state = client.app.state.service  # type: ignore[attr-defined]
    jpegs, _ = frames
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        outside = OutsideLoad(every_s=0.5)
        monkeypatch.setattr(state.pose, "outside", outside)
        deadline = time.monotonic() + 60
        while not ((outside.sample() or 0.0) >= SOLO_MAX_OUTSIDE_CORES) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert outside.cores is not None and outside.cores >= SOLO_MAX_OUTSIDE_CORES
        assert _solo_frames_of_a_stream(client, jpegs[:3]) == 0
    finally:
        spin.kill()
        spin.wait()


def test_pose_slots_solo_work_waits_for_every_slot() -> None:
    """A solo call takes every slot, one by one; a cancelled wait holds none."""
    import asyncio

    from service.pose_pool import PoseSlots

    async def run() -> list[int]:
        slots = PoseSlots(2)
        await slots.take(1)  # a stream's frame in pose
        solo = asyncio.ensure_future(slots.take(2))
        await asyncio.sleep(0.05)
        seen = [slots.free, int(solo.done())]  # one taken by the solo call, waiting for the other
        slots.give(1)
        await asyncio.wait_for(solo, 1)
        seen.append(slots.free)
        slots.give(2)
        await slots.take(1)
        late = asyncio.ensure_future(slots.take(2))
        await asyncio.sleep(0.05)
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)
        seen.append(slots.free)  # the cancelled call gave back the slot it had
        return seen

    assert asyncio.run(run()) == [0, 0, 0, 1]
    with pytest.raises(ValueError):
        asyncio.run(PoseSlots(2).take(3))


def test_pace_chooses_solo_frames_only_while_they_pay() -> None:
    """Single-threaded for the first SOLO_PROBE_EVERY frames, then solo while the stream leaves the
    cores idle (pose time < MAX_BUSY_ONE_AT_A_TIME of the interval) and solo frames are faster than
    single-threaded ones (a probe every SOLO_PROBE_EVERY frames checks): at 15 fps with 22 ms solo /
    30 ms single frames it poses solo (also at 33 ms solo, within a single probe's noise); at 30
    fps with 25 ms frames it does not; when other processes make solo frames 70 ms against 40 ms
    single ones, each lost probe doubles the wait for the next."""
    from service.streams.pacing import (
        LANES_AFTER_FRAMES,
        MAX_BUSY_ONE_AT_A_TIME,
        SOLO_GIVE_UP_RATIO,
        SOLO_MAX_BACKOFF,
        SOLO_PROBE_EVERY,
        Pace,
    )

    def run(fps: float, solo_s: float, single_s: float, frames: int = 400) -> tuple[Pace, list[bool]]:
        pace, chosen = Pace(), []
        for i in range(frames):
            pace.arrived(i / fps)
            solo = pace.wants_solo()
            chosen.append(solo)
            pace.posed(solo_s if solo else single_s, solo)
        return pace, chosen

    assert not Pace().wants_solo()  # nothing measured yet: single-threaded first
    _, quiet = run(15, 0.022, 0.030)
    assert quiet[:SOLO_PROBE_EVERY] == [False] * SOLO_PROBE_EVERY  # then solo, won: it stays
    assert quiet[SOLO_PROBE_EVERY : 2 * SOLO_PROBE_EVERY] == [True] * SOLO_PROBE_EVERY
    rest = quiet[SOLO_PROBE_EVERY:]
    assert rest.count(False) == len(rest) // (SOLO_PROBE_EVERY + 1)  # one single probe per round
    _, noisy = run(15, 0.99 * SOLO_GIVE_UP_RATIO * 0.030, 0.030)
    assert noisy == quiet
    pace, fast = run(30, 0.025, 0.035)
    assert not any(fast)  # 35 ms is more than the 33 ms interval: the lanes, never solo
    assert pace.busy() and not run(15, 0.022, 0.030)[0].busy()  # only a busy stream uses lane 2+
    warming = Pace()
    for i in range(LANES_AFTER_FRAMES):  # too slow for 30 fps from the first frame on, but warming up
        assert not warming.busy()
        warming.arrived(i / 30)
        warming.posed(0.2, solo=False)
    assert warming.busy()
    pace, contended = run(15, 0.070, 0.040, frames=6000)
    probes = [i for i, solo in enumerate(contended) if solo]
    waits = [b - a - 1 for a, b in pairwise([-1, *probes])]
    assert waits[:4] == [SOLO_PROBE_EVERY * 2**k for k in range(4)]  # each lost probe: twice the wait
    assert max(waits) == waits[-2] == SOLO_PROBE_EVERY * 2**SOLO_MAX_BACKOFF  # up to a bound
    assert pace.solo_s is not None and pace.single_s is not None and pace.solo_s > pace.single_s
    _, edge = run(10, 0.99 * MAX_BUSY_ONE_AT_A_TIME / 10, 0.99 * MAX_BUSY_ONE_AT_A_TIME / 10)
    assert edge[SOLO_PROBE_EVERY : 2 * SOLO_PROBE_EVERY] == [True] * SOLO_PROBE_EVERY
