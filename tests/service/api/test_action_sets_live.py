"""Action sets on the real service (``python -m service serve`` in a subprocess: uvicorn, MediaPipe,
ONNX Runtime, API keys on): enrol from real UP-Fall clips over HTTP, recognise the new labels in
``/recognize`` and ``/stream``, ``unknown`` for actions outside the set, a restart keeps the set,
deleting an example changes the prototypes, every new route needs a key, bad examples get 4xx."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from evaluation.action_sets import stream_labels
from skeleton.manifest import load_manifest
from tests.browser_helpers import REPO_ROOT, free_port, run_server
from tests.conftest import require_data
from tests.service_helpers import embedding_dir, trim_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEY = "test-key-action-sets"
AUTH = {"X-API-Key": KEY}
# each UP-Fall clip is cut to 4 s (18 fps): jumping from trials 1 and 2; walking from 5 s and 20 s into
# trial 1 (trial 2's walking leaves the frame early in its first seconds)
SECONDS = 4.0


def _copy_model(src: Path, zoo: Path) -> None:
    dst = zoo / src.name
    dst.mkdir()
    shutil.copy2(src / "manifest.json", dst)
    shutil.copy2(src / load_manifest(src, verify_sha=False).onnx.file, dst)


class Server:
    def __init__(self, url: str, sets: Path, zoo: Path, clips: dict[str, Path]) -> None:
        self.url, self.sets, self.zoo, self.clips = url, sets, zoo, clips

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=600, **kwargs)

    def upload(self, path: str, clip: Path, **params: Any) -> httpx.Response:
        with clip.open("rb") as f:
            return self.call("POST", path, params=params, files={"file": (clip.name, f, "video/mp4")})


def _env(zoo: Path, sets: Path) -> dict[str, str]:
    return {
        "SKELACT_MODELS_DIR": str(zoo),
        "SKELACT_ACTION_SETS_DIR": str(sets),
        "SKELACT_API_KEYS": KEY,
        "SKELACT_DEFAULT_MODEL": "upfall-stgcnpp-lite",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = require_data("upfall")
    tmp = tmp_path_factory.mktemp("action_sets")
    zoo, sets = tmp / "zoo", tmp / "sets"
    zoo.mkdir()
    _copy_model(REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite", zoo)
    (zoo / "embeddings").mkdir()
    _copy_model(embedding_dir(), zoo / "embeddings")  # where the shipped embedding lives
    frames = int(SECONDS * 18)
    clips = require_data("clips")
    cases = {
        "jump1": trim_video(data / "Activity10/Trial1Cam1.mp4", tmp / "jump1.mp4", frames=frames),
        "walk1": trim_video(data / "Activity6/Trial1Cam1.mp4", tmp / "walk1.mp4", start=90, frames=frames),
        "jump2": trim_video(data / "Activity10/Trial2Cam1.mp4", tmp / "jump2.mp4", frames=frames),
        "walk2": trim_video(data / "Activity6/Trial1Cam1.mp4", tmp / "walk2.mp4", start=360, frames=frames),
        "taichi": trim_video(clips / "stgcn_ta_chi.mp4", tmp / "taichi.mp4", frames=120),
        # weightlifting (10 s, all of it): its jerk looks like a jump to the plain cosine
        "cleanjerk": trim_video(clips / "stgcn_clean_and_jerk.mp4", tmp / "cj.mp4", frames=300),
        # falling backwards (trial 2, camera 1): stands, falls at ~3 s, lies on the floor
        "fall2": trim_video(data / "Activity3/Trial2Cam1.mp4", tmp / "fall2.mp4", frames=144),
    }
    port = free_port()
    with run_server(port, tmp / "server.log", env=_env(zoo, sets), ready_timeout=300):
        yield Server(f"http://127.0.0.1:{port}", sets, zoo, cases)


@pytest.fixture(scope="module")
def enrolled(server: Server) -> dict[str, Any]:
    """A set 'moves' with one example each of jumping and walking (trial 1 clips)."""
    r = server.call("POST", "/action-sets", json={"name": "moves"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/action-sets/moves" and r.json()["model"] == "set:moves"
    ids = {}
    for label, clip in (("jumping", "jump1"), ("walking", "walk1")):
        r = server.upload(f"/action-sets/moves/labels/{label}/examples", server.clips[clip])
        assert r.status_code == 201, r.text
        ex = r.json()["example"]
        assert ex["windows"] >= 1 and ex["seconds"] > 3 and ex["source"]["kind"] == "video", ex
        assert 0.0 < ex["spread"] <= 1.0, ex  # how closely its windows agree: its label's unknown bar
        ids[label] = ex["id"]
    return ids


def _clip(server: Server, clip: str, model: str = "set:moves", **params: Any) -> dict[str, Any]:
    r = server.upload("/recognize", server.clips[clip], model=model, **{"top_k": 10, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_new_set_recognises_its_labels_in_clips(server: Server, enrolled: dict[str, Any]) -> None:
    r = server.call("GET", "/action-sets/moves")
    assert r.status_code == 200 and r.headers["ETag"] == f'"{r.json()["version"]}"'
    assert [lab["name"] for lab in r.json()["labels"]] == ["jumping", "walking"]
    for clip, truth in (("jump2", "jumping"), ("walk2", "walking")):
        body = _clip(server, clip)
        assert body["model"] == "set:moves"
        assert body["clip"]["label"] == truth, body["clip"]
        assert {s["label"] for s in body["clip"]["top"]} == {"jumping", "walking", "unknown"}
        assert any(seg["label"] == truth for t in body["tracks"] for seg in t["segments"]), body["tracks"]


def test_actions_outside_the_set_are_unknown_and_the_threshold_is_per_request(
    server: Server, enrolled: dict[str, Any]
) -> None:
    body = _clip(server, "taichi")
    assert body["clip"]["label"] == "unknown", body["clip"]
    assert {seg["label"] for t in body["tracks"] for seg in t["segments"]} <= {"unknown"}, body["tracks"]
    lenient = _clip(server, "taichi", unknown_threshold=-10.0)  # a relative cosine is >= -10: never unknown
    assert lenient["clip"]["label"] in ("jumping", "walking"), lenient["clip"]
    for bad in ("11", "nan", "x"):  # a set's relative cosine lies in [-10, 10]
        r = server.upload("/recognize", server.clips["taichi"], model="set:moves", unknown_threshold=bad)
        assert r.status_code == 422, r.text
    # a base classifier says unknown too, with its own score's range checked
    base = _clip(server, "jump2", model="upfall-stgcnpp-lite", unknown_threshold=1.0)
    assert base["clip"]["label"] == "unknown", base["clip"]
    r = server.upload("/recognize", server.clips["jump2"], model="upfall-stgcnpp-lite", unknown_threshold=1.5)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_unknown_threshold", r.text


def test_an_action_outside_the_set_is_unknown_while_enrolled_ones_are_recognised(
    server: Server, enrolled: dict[str, Any]
) -> None:
    """The default rule (the manifest's relative cosine, chosen across UP-Fall trials): a
    clean-and-jerk is not the enrolled jumping, while another trial's jumping still is, and so is
    walking, whose example's windows agree less (a plain cosine bar that rejects the lift rejects it)."""
    body = _clip(server, "cleanjerk")
    assert body["clip"]["label"] == "unknown", body["clip"]
    assert _clip(server, "jump2")["clip"]["label"] == "jumping"
    assert _clip(server, "walk2")["clip"]["label"] == "walking"


def test_streamed_video_outside_the_set_is_unknown(server: Server, enrolled: dict[str, Any]) -> None:
    """JPEG frames replayed over ``WS /stream`` on the clip's own clock (evaluation.action_sets'
    stream view): every label the replies give the tai chi player is ``unknown``; a jump is jumping."""
    taichi = stream_labels(server.url, server.clips["taichi"], "set:moves", AUTH)
    assert taichi.frames == 120 and taichi.labelled > 0 and taichi.unknown == taichi.labelled, taichi
    jump = stream_labels(server.url, server.clips["jump2"], "set:moves", AUTH)
    assert jump.known.get("jumping", 0) > jump.labelled / 2, jump


@pytest.fixture(scope="module")
def jump2_skeletons(server: Server) -> dict[str, Any]:
    """The trial-2 jumping clip as skeleton JSON, posed here by the real MediaPipe estimator."""
    from bench.action_sets import clip_skeletons

    return clip_skeletons(server.clips["jump2"])


def test_a_stream_on_the_set_gives_its_labels(
    server: Server, enrolled: dict[str, Any], jump2_skeletons: dict[str, Any]
) -> None:
    """Skeleton frames carry their own timestamps: the stream's windows follow the clip's clock
    however slowly the loaded machine answers."""
    url = server.url.replace("http", "ws") + f"/stream?model=set:moves&api_key={KEY}"
    labels: list[str | None] = []
    with connect(url, open_timeout=120, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=120))
        assert hello["type"] == "hello" and hello["labels"] == ["jumping", "walking", "unknown"], hello
        for frame in jump2_skeletons["frames"]:
            time.sleep(1 / 30)  # under SKELACT_MAX_STREAM_FPS (60 messages per second)
            ws.send(json.dumps({"type": "skeleton", "width": 640, "height": 480, **frame}))
            msg = json.loads(ws.recv(timeout=120))  # one reply per frame, sent one at a time
            assert msg["type"] == "frame", msg
            labels += [t["label"] for t in msg["tracks"] if t["label"] is not None]
        assert labels and labels[-1] == "jumping", labels
        # an example from the stream's last 3 s, into another set
        assert server.call("POST", "/action-sets", json={"name": "from-stream"}).status_code == 201
        ws.send(json.dumps({"type": "enrol", "action_set": "from-stream", "label": "hop", "seconds": 3}))
        reply = json.loads(ws.recv(timeout=120))
        assert reply["type"] == "enrolled" and reply["label"] == "hop", reply
        assert reply["example"]["source"]["kind"] == "stream" and reply["example"]["seconds"] > 2.5, reply
        ws.send(json.dumps({"type": "enrol", "action_set": "from-stream", "label": "hop", "track_id": 999}))
        reply = json.loads(ws.recv(timeout=120))
        assert reply["type"] == "error" and reply["code"] == "nobody_found", reply
        r = server.call("GET", "/action-sets/from-stream")
        assert r.status_code == 200 and r.json()["labels"][0]["examples"][0]["source"]["kind"] == "stream", (
            r.text
        )
        assert server.call("DELETE", "/action-sets/from-stream").status_code == 204
        # the same stream, told a threshold no window reaches, says unknown from then on
        ws.send(json.dumps({"type": "config", "unknown_threshold": 1.0}))
        hello = json.loads(ws.recv(timeout=120))
        assert hello["type"] == "hello", hello
        labels = []
        for frame in jump2_skeletons["frames"]:
            shifted = {**frame, "timestamp": frame["timestamp"] + 10.0}
            time.sleep(1 / 30)
            ws.send(json.dumps({"type": "skeleton", "width": 640, "height": 480, **shifted}))
            msg = json.loads(ws.recv(timeout=120))
            assert msg["type"] == "frame", msg
            labels += [t["label"] for t in msg["tracks"] if t["label"] is not None]
        assert labels and set(labels) == {"unknown"}, labels


UPFALL_LABELS = load_manifest(REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite", verify_sha=False).labels


def test_a_set_next_to_a_base_model(server: Server, jump2_skeletons: dict[str, Any]) -> None:
    """``model=set:NAME,BASE``: a lift and a floor exercise taught on top of the UP-Fall classifier,
    which knows neither. The taught labels take over where they match, the base answers the rest,
    and a fall stays a fall even where a taught action matches it (service.combined)."""
    assert server.call("POST", "/action-sets", json={"name": "extra"}).status_code == 201
    for label, clip in (("clean and jerk", "cleanjerk"), ("floor exercise", "fall2")):
        r = server.upload(f"/action-sets/extra/labels/{label}/examples", server.clips[clip])
        assert r.status_code == 201, r.text
    both = "set:extra,upfall-stgcnpp-lite"
    body = _clip(server, "cleanjerk", model=both, top_k=100)
    assert body["model"] == both and body["clip"]["label"] == "clean and jerk", body["clip"]
    labels = {s["label"] for s in body["clip"]["top"]}
    assert labels == {*UPFALL_LABELS, "clean and jerk", "floor exercise", "unknown"}, labels
    assert _clip(server, "walk2", model="set:extra")["clip"]["label"] == "unknown"  # the set alone
    assert _clip(server, "walk2", model=both)["clip"]["label"] == "walking"  # the base fills in
    assert _clip(server, "walk2", model="upfall-stgcnpp-lite,set:extra")["model"] == both  # either order
    alone = _clip(server, "fall2", model="set:extra")["clip"]
    assert alone["label"] == "floor exercise" and not alone["fall"], alone  # the set alone hides the fall
    fall = _clip(server, "fall2", model=both)["clip"]
    assert fall["fall"] and fall["label"] == "falling backwards", fall  # next to the base it does not
    assert _clip(server, "fall2", model="upfall-stgcnpp-lite")["clip"]["fall"]
    # the set's threshold is the request's: one no window reaches leaves the base alone
    assert _clip(server, "cleanjerk", model=both, unknown_threshold=10.0)["clip"]["label"] != "clean and jerk"
    # streams on both: the taught label and the base's, and an example from a stream into the set
    lift = stream_labels(server.url, server.clips["cleanjerk"], both, AUTH)
    assert lift.known.get("clean and jerk", 0) > lift.labelled / 2, lift
    walk = stream_labels(server.url, server.clips["walk2"], both, AUTH)
    assert walk.known.get("walking", 0) > walk.labelled / 2, walk
    url = server.url.replace("http", "ws") + f"/stream?model={both}&api_key={KEY}"
    with connect(url, open_timeout=120, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=120))
        assert hello["type"] == "hello", hello
        assert hello["labels"] == [*UPFALL_LABELS, "clean and jerk", "floor exercise", "unknown"], hello
        for frame in jump2_skeletons["frames"]:
            time.sleep(1 / 30)
            ws.send(json.dumps({"type": "skeleton", "width": 640, "height": 480, **frame}))
            assert json.loads(ws.recv(timeout=120))["type"] == "frame"
        ws.send(json.dumps({"type": "enrol", "action_set": "extra", "label": "hop", "seconds": 3}))
        reply = json.loads(ws.recv(timeout=120))
        assert reply["type"] == "enrolled" and reply["example"]["source"]["kind"] == "stream", reply
    for bad, code in (
        ("set:extra,set:moves", "invalid_model"),
        ("set:extra,upfall-stgcnpp-lite,x", "invalid_model"),
        (f"set:extra,{embedding_dir().name}", "embedding_model"),
    ):
        r = server.upload("/recognize", server.clips["walk2"], model=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    r = server.upload("/recognize", server.clips["walk2"], model="set:nope,upfall-stgcnpp-lite")
    assert r.status_code == 404, r.text
    assert server.call("DELETE", "/action-sets/extra").status_code == 204


def test_an_example_from_skeleton_json(
    server: Server, enrolled: dict[str, Any], jump2_skeletons: dict[str, Any]
) -> None:
    r = server.call("POST", "/action-sets", json={"name": "json-set"})
    assert r.status_code == 201, r.text
    r = server.call(
        "POST", "/action-sets/json-set/labels/jump/examples", json=jump2_skeletons, params={"end": 3.0}
    )
    assert r.status_code == 201, r.text
    ex = r.json()["example"]
    assert ex["source"]["kind"] == "skeleton" and ex["source"]["end"] <= 3.0 and ex["windows"] >= 1, ex
    r = server.call("POST", "/recognize", params={"model": "set:json-set"}, json=jump2_skeletons)
    assert r.status_code == 200 and r.json()["clip"]["label"] == "jump", r.text
    assert server.call("DELETE", "/action-sets/json-set").status_code == 204


def test_deleting_an_example_changes_the_prototypes(server: Server, enrolled: dict[str, Any]) -> None:
    before = _clip(server, "jump2")["clip"]["top"]
    r = server.upload("/action-sets/moves/labels/walking/examples", server.clips["jump2"])
    assert r.status_code == 201, r.text
    extra = r.json()["example"]["id"]
    mixed = _clip(server, "jump2")["clip"]["top"]
    assert mixed != before  # a jumping clip enrolled as walking pulls the walking prototype over
    r = server.call("DELETE", f"/action-sets/moves/labels/walking/examples/{extra}")
    assert r.status_code == 204, r.text
    after = _clip(server, "jump2")["clip"]["top"]
    assert after == before
    assert server.call("DELETE", f"/action-sets/moves/labels/walking/examples/{extra}").status_code == 404


def test_bad_examples_get_clear_4xx(server: Server, enrolled: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter.fourcc(*"mp4v"), 18.0, (320, 240))
    for _ in range(54):
        writer.write(np.full((240, 240 + 80, 3), 90, np.uint8)[:, :320])
    writer.release()
    cases = [
        ("/action-sets/moves/labels/jumping/examples", empty, {}, 422, "nobody_found"),
        (
            "/action-sets/moves/labels/jumping/examples",
            server.clips["jump1"],
            {"start": 1.0, "end": 1.5},
            422,
            "example_too_short",
        ),
        (
            "/action-sets/moves/labels/jumping/examples",
            server.clips["jump1"],
            {"start": 3.0, "end": 2.0},
            422,
            "invalid_span",
        ),
        ("/action-sets/moves/labels/unknown/examples", server.clips["jump1"], {}, 422, "invalid_label"),
        ("/action-sets/nope/labels/jumping/examples", server.clips["jump1"], {}, 404, "not_found"),
    ]
    for path, clip, params, status, code in cases:
        r = server.upload(path, clip, **params)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path, params, r.text)
    # two real people side by side: two UP-Fall clips joined left and right
    two = tmp_path / "two.mp4"
    left, right = cv2.VideoCapture(str(server.clips["jump1"])), cv2.VideoCapture(str(server.clips["walk1"]))
    writer = cv2.VideoWriter(str(two), cv2.VideoWriter.fourcc(*"mp4v"), 18.0, (1280, 480))
    for _ in range(54):
        (ok1, a), (ok2, b) = left.read(), right.read()
        assert ok1 and ok2
        writer.write(np.hstack([a, b]))
    writer.release()
    r = server.upload("/action-sets/moves/labels/pair/examples", two, one_person="true")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "several_people"), r.text
    assert server.call("POST", "/action-sets", json={"name": "moves"}).status_code == 409
    assert server.call("POST", "/action-sets", json={"name": "../x"}).status_code == 422
    assert [lab["name"] for lab in server.call("GET", "/action-sets/moves").json()["labels"]] == [
        "jumping",
        "walking",
    ]


def test_the_check_judges_each_example_by_the_others(server: Server) -> None:
    """Two jumping examples (trials 1 and 2) recognise each other, the one walking example is not
    taken for jumping; a walking clip enrolled as jumping by mistake is named as walking-like."""
    assert server.call("POST", "/action-sets", json={"name": "checked"}).status_code == 201
    try:
        empty = server.call("GET", "/action-sets/checked/check").json()
        assert empty["outcomes"] == {} and empty["examples"] == [], empty
        for label, clip in (("jumping", "jump1"), ("jumping", "jump2"), ("walking", "walk1")):
            r = server.upload(f"/action-sets/checked/labels/{label}/examples", server.clips[clip])
            assert r.status_code == 201, r.text
        r = server.call("GET", "/action-sets/checked/check")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["unknown_threshold"] == pytest.approx(0.925), body
        assert body["outcomes"] == {"right": 2, "distinct": 1}, body
        found = [(e["label"], e["outcome"]) for e in body["examples"]]
        assert found == [("jumping", "right"), ("jumping", "right"), ("walking", "distinct")], body
        r = server.upload("/action-sets/checked/labels/jumping/examples", server.clips["walk2"])
        assert r.status_code == 201, r.text
        mistake = r.json()["example"]["id"]
        checked = server.call("GET", "/action-sets/checked/check").json()["examples"]
        wrong = next(e for e in checked if e["id"] == mistake)
        assert (wrong["outcome"], wrong["nearest"]) == ("confused", "walking"), checked
        r = server.call("GET", "/action-sets/checked/check", params={"unknown_threshold": 11})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_unknown_threshold", r.text
    finally:
        server.call("DELETE", "/action-sets/checked")


def test_every_action_set_route_needs_a_key(server: Server, enrolled: dict[str, Any]) -> None:
    routes = [
        ("GET", "/action-sets"),
        ("POST", "/action-sets"),
        ("GET", "/action-sets/moves"),
        ("GET", "/action-sets/moves/check"),
        ("PATCH", "/action-sets/moves"),
        ("DELETE", "/action-sets/moves"),
        ("PATCH", "/action-sets/moves/labels/walking"),
        ("DELETE", "/action-sets/moves/labels/walking"),
        ("GET", "/action-sets/moves/labels/walking/examples"),
        ("POST", "/action-sets/moves/labels/walking/examples"),
        ("DELETE", "/action-sets/moves/labels/walking/examples/" + "0" * 32),
    ]
    for method, path in routes:
        for headers, status in (({}, 401), ({"X-API-Key": "wrong"}, 403)):
            r = httpx.request(method, server.url + path, headers=headers, json={"name": "x"}, timeout=60)
            assert r.status_code == status, (method, path, r.status_code, r.text)
    assert server.call("GET", "/action-sets/moves").status_code == 200  # nothing was changed


def test_rename_labels_and_sets_and_sets_do_not_share_examples(
    server: Server, enrolled: dict[str, Any]
) -> None:
    r = server.call("POST", "/action-sets", json={"name": "other"})
    assert r.status_code == 201
    r = server.upload("/action-sets/other/labels/hop/examples", server.clips["jump1"])
    assert r.status_code == 201, r.text
    other = _clip(server, "jump2", model="set:other")
    assert {s["label"] for s in other["clip"]["top"]} == {"hop", "unknown"}  # nothing of 'moves'
    r = server.call("PATCH", "/action-sets/other/labels/hop", json={"name": "bounce"})
    assert r.status_code == 200 and [lab["name"] for lab in r.json()["labels"]] == ["bounce"]
    etag = r.headers["ETag"]
    r = server.call("PATCH", "/action-sets/other", json={"name": "other2"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412, r.text
    r = server.call("PATCH", "/action-sets/other", json={"name": "other2"}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.json()["model"] == "set:other2", r.text
    assert server.call("GET", "/action-sets/other").status_code == 404
    r = server.call("POST", "/recognize", params={"model": "set:other"}, json={"frames": [{"timestamp": 0}]})
    assert r.status_code == 404, r.text
    assert server.call("DELETE", "/action-sets/other2").status_code == 204
    assert "other2" not in [s["name"] for s in server.call("GET", "/action-sets").json()["sets"]]


def test_a_restart_keeps_the_set(server: Server, enrolled: dict[str, Any], tmp_path: Path) -> None:
    """A second server on the same folder (a restart, or another replica) serves the same set."""
    before = _clip(server, "walk2")["clip"]
    port = free_port()
    with run_server(port, tmp_path / "again.log", env=_env(server.zoo, server.sets), ready_timeout=300):
        again = Server(f"http://127.0.0.1:{port}", server.sets, server.zoo, server.clips)
        r = again.call("GET", "/action-sets/moves")
        assert r.status_code == 200 and [lab["name"] for lab in r.json()["labels"]] == ["jumping", "walking"]
        assert _clip(again, "walk2")["clip"] == before
