"""Fall events through a real server (uvicorn on loopback) with the shipped UP-Fall model: a real fall
streamed at real pace over ``WS /stream`` and uploaded to ``POST /recognize`` raises a ``fall``, then
a ``recovered`` when the person gets up; a real clip of someone bending down raises nothing.

Nobody gets up in UP-Fall, so the recording where the person does is built from real frames
(`training.joined.join_videos`): Activity1/Trial1Cam1 (stand, fall forward at ~3.1 s, lie), the
same clip played backwards (the person rises from the floor: a real body, a real rise, one track),
then its first 2.5 s again (standing where the reversed clip ended). The non-fall clip is
Activity9/Trial1Cam1: picking an object up from the floor, the classic false alarm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from evaluation.falls import Recording, clip_view, replay_view, video_seconds
from evaluation.upfall import local_server
from service.core.config import Settings
from skeleton.manifest import load_manifest
from tests.conftest import require_data
from tests.service_helpers import MODEL_ZOO, require_upfall_model, trim_video
from training.joined import join_videos

FALL_CLIP = ("upfall", "Activity1", "Trial1Cam1.mp4")  # falls at ~3.1 s, 7.9 s long
BENDING_CLIP = ("upfall", "Activity9", "Trial1Cam1.mp4")  # picks an object up, 7 s
FALL_LABELS = {
    "falling forward using hands",
    "falling forward using knees",
    "falling backwards",
    "falling sideward",
    "falling sitting in empty chair",
}


@pytest.fixture(scope="module")
def model() -> str:
    return require_upfall_model()


@pytest.fixture(scope="module")
def url(model: str) -> Iterator[str]:
    with local_server(Settings(models_dir=MODEL_ZOO, default_model=model, providers=["cpu"])) as base:
        yield base


@pytest.fixture(scope="module")
def fall_then_up(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """A real fall, the person getting up (the fall backwards), then standing."""
    folder = tmp_path_factory.mktemp("falls")
    fall = require_data(*FALL_CLIP)
    standing = trim_video(fall, folder / "standing.mp4", frames=45)  # before the fall (~3.1 s)
    path = folder / "fall_then_up.mp4"
    join_videos([fall, fall, standing], path, reverse={1})
    return Recording("fall then up", path, "falls", True, video_seconds(path))


@pytest.fixture(scope="module")
def bending() -> Recording:
    path = require_data(*BENDING_CLIP)
    return Recording("Activity9/Trial1Cam1", path, "falls", False, video_seconds(path))


def _fall_counts(base: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith("skelact_fall_events_total{"):
            labels = dict(kv.split("=") for kv in line[line.index("{") + 1 : line.index("}")].split(","))
            key = (labels["kind"].strip('"'), labels["source"].strip('"'))
            out[key] = float(line.rsplit(" ", 1)[1])
    return out


def _check_fall_then_recovered(events: list[dict[str, Any]], duration: float, lag: float = 0.0) -> None:
    """``lag``: how late a stream's clock may run (the server dates a JPEG frame when it reads it:
    on a busy machine later than the frame was sent)."""
    assert [e["type"] for e in events] == ["fall", "recovered"], events
    fall, up = events
    assert fall["label"] in FALL_LABELS and fall["confidence"] >= 0.5, fall
    # the fall is dated at the fall (~3.1 s), decided once the person was down for confirm_s (2 s),
    # before the reversed clip starts (7.9 s); the rise ends at ~12.6 s, then 2 s seen up
    assert 2.0 <= fall["fall_time"] <= 4.5 + lag, fall
    assert fall["fall_time"] + 1.5 <= fall["time"] <= 7.9 + 1.0 + lag, fall
    assert 12.6 + 1.0 <= up["time"] <= duration + 1.0 + lag, up
    assert up["fall_time"] == fall["fall_time"], events
    assert up["after"]["torso_angle"] < 60 <= fall["after"]["torso_angle"], events


def test_stream_fall_then_recovered(url: str, model: str, fall_then_up: Recording) -> None:
    before = _fall_counts(url)
    # stamped with the recording's capture times, each frame sent once the last was answered: every
    # frame posed on the recording's clock, so the events do not depend on this machine's speed
    res = replay_view(url, fall_then_up, model)
    assert res.error is None, res.error
    assert res.frames_processed == res.frames_sent > 0
    _check_fall_then_recovered(res.events, fall_then_up.duration_s)
    after = _fall_counts(url)
    for kind in ("fall", "recovered"):
        assert after.get((kind, "stream"), 0) - before.get((kind, "stream"), 0) == 1, (before, after)


def test_stream_bending_down_is_no_fall(url: str, model: str, bending: Recording) -> None:
    res = replay_view(url, bending, model)
    assert res.error is None, res.error
    assert res.frames_processed == res.frames_sent > 0
    assert res.events == []


def test_recognize_fall_then_recovered(url: str, model: str, fall_then_up: Recording) -> None:
    res = clip_view(url, fall_then_up, model)
    assert res.error is None, res.error
    _check_fall_then_recovered(res.events, fall_then_up.duration_s)
    body = httpx.post(
        f"{url}/recognize",
        params={"model": model},
        files={"file": ("f.mp4", fall_then_up.path.read_bytes(), "video/mp4")},
        timeout=600,
    ).json()
    assert body["clip"]["fall"] is True and body["clip"]["label"] in FALL_LABELS, body["clip"]
    assert body["clip"]["fall_time"] == body["falls"][0]["fall_time"]
    # the rule applied is the shipped model's (`python -m export fall-rule`, docs/falls.md)
    assert body["fall_rule"] == load_manifest(MODEL_ZOO / model).fall_rule.model_dump()


def test_recognize_bending_down_is_no_fall(url: str, model: str, bending: Recording) -> None:
    with bending.path.open("rb") as f:
        r = httpx.post(
            f"{url}/recognize", params={"model": model}, files={"file": (bending.path.name, f)}, timeout=600
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["falls"] == [] and body["clip"]["fall"] is False, body["clip"]
    assert body["clip"]["label"] == "picking up an object", body["clip"]


@pytest.fixture(scope="module")
def client_skeletons(fall_then_up: Recording) -> dict[str, Any]:
    """The fall-then-up recording's people as a client that runs MediaPipe itself sends them
    (every frame, with its capture time and the client's own track ids)."""
    import numpy as np

    from training.extract import extract_video

    clip = extract_video(fall_then_up.path)
    frames = []
    for i, t in enumerate(clip.timestamps):
        people = [
            {"id": int(tid), "image": seq.image[i].tolist(), "visibility": seq.visibility[i].tolist()}
            for tid, seq in zip(clip.track_ids, clip.tracks, strict=True)
            if np.isfinite(seq.image[i]).all()
        ]
        frames.append({"timestamp": float(t), "people": people})
    return {"width": clip.width, "height": clip.height, "frames": frames}


def test_streamed_skeletons_give_the_clips_events(
    url: str, model: str, client_skeletons: dict[str, Any]
) -> None:
    """The same skeletons streamed at the recording's pace (each frame once the previous one's reply
    came, so none is dropped) and uploaded as one clip: the same fall and recovery, same times."""
    from websockets.sync.client import connect

    clip = httpx.post(f"{url}/recognize?model={model}", json=client_skeletons, timeout=600)
    assert clip.status_code == 200, clip.text
    clip_events = clip.json()["falls"]
    streamed: list[dict[str, Any]] = []
    size = {"width": client_skeletons["width"], "height": client_skeletons["height"]}
    with connect(url.replace("http", "ws") + f"/stream?model={model}", proxy=None, max_size=None) as ws:
        json.loads(ws.recv(timeout=60))
        t0 = time.monotonic()
        for frame in client_skeletons["frames"]:  # at the recording's pace (the server's rate limit)
            time.sleep(max(0.0, t0 + frame["timestamp"] - time.monotonic()))
            ws.send(json.dumps({"type": "skeleton", **size, **frame}))
            reply = json.loads(ws.recv(timeout=60))
            assert reply["type"] == "frame", reply
            streamed += reply["falls"]
    _check_fall_then_recovered(clip_events, client_skeletons["frames"][-1]["timestamp"])
    assert streamed == clip_events


def test_overrides_are_validated(url: str, model: str, bending: Recording) -> None:
    """Bad fall-rule overrides are a 422 before the upload is processed, and refuse a stream."""
    from websockets.sync.client import connect

    for query, field in (
        ("confirm_s=-1", "confirm_s"),
        ("fall_threshold=2", "fall_threshold"),
        ("down_angle=abc", "down_angle"),
        ("confirm_s=9", "expire_s"),
    ):
        r = httpx.post(f"{url}/recognize?model={model}&{query}", files={"file": ("a.mp4", b"x" * 10)})
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and field in r.json()["error"]["message"]
        with connect(url.replace("http", "ws") + f"/stream?{query}", proxy=None) as ws:
            msg = ws.recv(timeout=30)
            assert '"invalid_request"' in str(msg) and field in str(msg), msg


def test_stream_config_changes_the_fall_rule(url: str, model: str) -> None:
    """A config message's fall_rule replaces the stream's overrides (hello says so); a bad one is an
    error and changes nothing."""
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/stream?confirm_s=3&expire_s=8", proxy=None) as ws:
        hello = json.loads(ws.recv(timeout=60))
        assert hello["fall_rule"]["confirm_s"] == 3.0 and hello["fall_rule"]["expire_s"] == 8.0
        ws.send(json.dumps({"type": "config", "fall_rule": {"confirm_s": -1}}))
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and err["code"] == "invalid_message" and "confirm_s" in err["message"]
        # overrides replace the stream's: confirm_s 9 with the model's expire_s (~6 s) is inconsistent
        ws.send(json.dumps({"type": "config", "fall_rule": {"confirm_s": 9}}))
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and "expire_s" in err["message"], err
        ws.send(json.dumps({"type": "config", "fall_rule": {"recover_s": 4}}))
        hello = json.loads(ws.recv(timeout=30))
        assert hello["type"] == "hello" and hello["fall_rule"]["recover_s"] == 4.0
        shipped = load_manifest(MODEL_ZOO / model).fall_rule.confirm_s
        assert hello["fall_rule"]["confirm_s"] == shipped != 3.0  # the new overrides replace the old ones


def test_a_model_without_fall_classes_has_no_fall_rule(url: str) -> None:
    """Models without fall classes get no monitor: hello carries no rule."""
    from websockets.sync.client import connect

    models = httpx.get(url + "/models").json()["models"]
    name = next((m["name"] for m in models if not m["label_groups"].get("fall")), None)
    if name is None:
        pytest.skip("no model without fall classes in the zoo")
    with connect(url.replace("http", "ws") + f"/stream?model={name}", proxy=None) as ws:
        assert json.loads(ws.recv(timeout=60))["fall_rule"] is None
