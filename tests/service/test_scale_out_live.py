"""Several real replicas (``python -m service serve`` subprocesses, uvicorn, loopback) as Kubernetes
runs them: one shared folder for results and jobs (the ReadWriteMany volume), real frames, real signals.

* readiness: 503 ``full`` with the numbers and the setting while a replica is at its stream
  capacity (new streams 1013), 200 again when a stream closes; the capacity gauges agree;
* shared state: an annotated video made by replica A downloads from replica B; an asynchronous job
  submitted to A (the client gone after the 202) is followed on B, its progress frames done of
  total, and ends with the synchronous call's response;
* a job whose replica is killed (SIGKILL: no shutdown) is reported failed (``job_lost``) by the
  other replica once the lease runs out, not pending forever;
* SIGTERM with two open streams and a clip in flight: the streams get ``shutting_down`` and close
  1001, the clip completes with 200, new connections are refused, and the process exits well within
  the shutdown budget.

Every wait is on an event (a reply, a metric, a state) with a generous bound, never on speed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.server import metric_total, parse_metrics
from service.schemas import RecognizeResponse
from tests.browser_helpers import free_port, spawn_server, stop_process, wait_http
from tests.conftest import require_data
from tests.service_helpers import jpeg_frames, trim_video, write_linear_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LABELS = ["stand", "walk", "fall", "sit"]
MAX_STREAMS = 2
LEASE_S = 5.0
SHUTDOWN_S = 240.0  # generous: the clip in flight must finish on a loaded machine


class Replica:
    def __init__(self, name: str, root: Path, shared: Path, zoo: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        self.proc = spawn_server(
            self.port,
            self.log,
            {
                "SKELACT_MODELS_DIR": str(zoo),
                "SKELACT_PROVIDERS": "cpu",
                "SKELACT_LOG_LEVEL": "warning",
                "SKELACT_POSE_WORKERS": "2",
                "SKELACT_RESULTS_DIR": str(shared / "results"),
                "SKELACT_JOBS_DIR": str(shared / "jobs"),
                "SKELACT_JOB_LEASE_S": str(LEASE_S),
                "SKELACT_MAX_STREAMS": str(MAX_STREAMS),
                "SKELACT_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S),
                **env,
            },
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def metric(self, name: str) -> float:
        return metric_total(parse_metrics(self.http.get("/metrics").text), name)

    def tail(self) -> str:
        return f"--- {self.name} log:\n" + self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        self.http.close()
        stop_process(self.proc)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s (last: {value!r})"
        time.sleep(every)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas")


@pytest.fixture(scope="module")
def replicas(root: Path) -> Iterator[dict[str, Replica]]:
    """A and B (and C, killed by one test) on one shared folder, started together."""
    zoo = root / "zoo"
    write_linear_model(zoo / "linear", LABELS, length=8, fps=10, stride=2)
    shared = root / "shared"
    started = {name: Replica(name, root, shared, zoo) for name in ("A", "B", "C")}
    try:
        for r in started.values():
            try:
                wait_http(r.url + "/health/ready", 300, r.proc)
            except Exception as exc:
                raise AssertionError(f"{r.name} did not start: {exc}\n{r.tail()}") from exc
        yield started
    finally:
        for r in started.values():
            r.close()


@pytest.fixture(scope="module")
def clips(root: Path) -> dict[str, Path]:
    src = require_data("upfall", "Activity7", "Trial1Cam1.mp4")
    return {
        "short": trim_video(src, root / "short.mp4", start=30, frames=36),
        "medium": trim_video(src, root / "medium.mp4", start=30, frames=120),
        "long": trim_video(src, root / "long.mp4", start=30, frames=300),
    }


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    jpegs, _ = jpeg_frames(require_data("upfall", "Activity7", "Trial1Cam1.mp4"), 20, start=30, max_side=320)
    return jpegs


def _post_clip(
    r: Replica, clip: Path, params: str = "", headers: dict[str, str] | None = None
) -> httpx.Response:
    """On a connection of its own (callers run in threads; a pooled one may be closed by a drain)."""
    with clip.open("rb") as f, httpx.Client(base_url=r.url, timeout=600) as http:
        return http.post("/recognize" + params, files={"file": (clip.name, f, "video/mp4")}, headers=headers)


def test_ready_is_503_at_stream_capacity(replicas: dict[str, Replica]) -> None:
    a = replicas["A"]
    assert a.http.get("/health/ready").status_code == 200
    assert a.metric("skelact_stream_capacity") == MAX_STREAMS
    first = connect(a.ws_url, open_timeout=60)
    second = connect(a.ws_url, open_timeout=60)
    try:
        for ws in (first, second):
            assert json.loads(ws.recv(timeout=120))["type"] == "hello"
        full = a.http.get("/health/ready")
        assert full.status_code == 503, full.text
        assert full.json() == {
            "status": "full",
            "ready": False,
            "reason": f"at stream capacity: {MAX_STREAMS} of {MAX_STREAMS} streams open "
            "(SKELACT_MAX_STREAMS)",
            "models": {"linear": "cpu"},
            "pose": full.json()["pose"],
            "warnings": [],
            "providers": ["cpu"],
            "provider_note": full.json()["provider_note"],
        }
        assert a.metric("skelact_active_streams") == MAX_STREAMS
        with connect(a.ws_url, open_timeout=60) as third:  # refused: try again later
            assert json.loads(third.recv(timeout=60))["code"] == "too_many_streams"
            with pytest.raises(ConnectionClosed) as closed:
                third.recv(timeout=60)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        first.close()
    try:
        wait_for(
            "readiness after a stream closed", lambda: a.http.get("/health/ready").status_code == 200, 60
        )
    finally:
        second.close()


def test_results_and_jobs_are_shared_between_replicas(
    replicas: dict[str, Replica], clips: dict[str, Path]
) -> None:
    a, b = replicas["A"], replicas["B"]
    sync = _post_clip(a, clips["short"], "?overlay=true")
    assert sync.status_code == 200, sync.text
    expected = RecognizeResponse.model_validate(sync.json())
    assert expected.overlay_url and expected.tracks, "the clip shows a person"
    video = b.http.get(expected.overlay_url)  # made by A, downloaded from B
    assert video.status_code == 200 and video.headers["content-type"] == "video/webm"
    assert video.content == (a.http.get(expected.overlay_url)).content and len(video.content) > 1000

    submitted = _post_clip(a, clips["short"], headers={"Prefer": "respond-async"})
    assert submitted.status_code == 202, submitted.text
    job_url = submitted.headers["location"]
    assert job_url == f"/jobs/{submitted.json()['job_id']}" and submitted.json()["state"] == "queued"
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        status = b.http.get(job_url).json()  # followed on the other replica
        seen.append(status)
        return status["state"] in ("done", "failed")

    wait_for("finished job", finished, 300, every=0.1)
    final = seen[-1]
    assert final["state"] == "done", final
    done = [s["progress"]["frames_done"] for s in seen]
    assert done == sorted(done), "progress never goes back"
    assert final["progress"] == {"frames_done": 36, "frames_total": 36}
    assert {s["state"] for s in seen} <= {"queued", "running", "done"}
    result = RecognizeResponse.model_validate(final["result"])
    same = {"stats", "overlay_url"}
    assert result.model_dump(exclude=same) == expected.model_dump(exclude=same), "async = sync answer"
    assert a.http.get(job_url).json()["result"] == final["result"]
    assert b.http.get("/jobs/" + "0" * 32).status_code == 404
    assert b.http.get("/jobs/..%2F..%2Fetc").status_code == 404


def test_a_killed_replicas_job_is_reported_failed(
    replicas: dict[str, Replica], clips: dict[str, Path]
) -> None:
    b, c = replicas["B"], replicas["C"]
    submitted = _post_clip(c, clips["long"], "?mode=async")
    assert submitted.status_code == 202, submitted.text
    job_url = submitted.headers["location"]

    def running() -> dict[str, Any] | None:
        status: dict[str, Any] = b.http.get(job_url).json()
        assert status["state"] != "done", "the clip finished before it could be killed: use a longer one"
        return status if status["state"] == "running" and status["progress"]["frames_done"] > 0 else None

    before = wait_for("running job", running, 300, every=0.1)
    assert before["progress"]["frames_total"] == 300
    c.proc.send_signal(signal.SIGKILL)  # no shutdown, no last write: the node died
    assert c.proc.wait(30) == -signal.SIGKILL
    failed = wait_for(
        "failed job", lambda: (s := b.http.get(job_url).json())["state"] == "failed" and s, LEASE_S + 120
    )
    assert failed["error"]["code"] == "job_lost", failed
    assert "SKELACT_JOB_LEASE_S" in failed["error"]["message"] and failed["error"]["hint"]
    assert failed["progress"]["frames_done"] >= before["progress"]["frames_done"]


class StreamClient(threading.Thread):
    """Sends real frames in lock-step (one reply each) until the server closes the stream."""

    def __init__(self, url: str, frames: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames = frames
        self.replies: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=60, max_size=None) as ws:
                assert json.loads(ws.recv(timeout=120))["type"] == "hello"
                i = 0
                try:
                    while True:
                        ws.send(self.frames[i % len(self.frames)])
                        i += 1
                        self.replies.append(json.loads(ws.recv(timeout=120)))
                except ConnectionClosed:  # a send may see the close first: read what came before it
                    try:
                        while True:
                            self.replies.append(json.loads(ws.recv(timeout=120)))
                    except ConnectionClosed as closed:
                        if closed.rcvd is not None:
                            self.close_code, self.close_reason = closed.rcvd.code, closed.rcvd.reason
        except BaseException as exc:
            self.error = exc


def _late_stream(url: str) -> str:
    """What a stream opened during shutdown gets: its first message's code, or the error's name."""
    try:
        with connect(url, open_timeout=10) as ws:
            return str(json.loads(ws.recv(timeout=30)).get("code", "hello"))
    except (OSError, ConnectionClosed) as exc:
        return type(exc).__name__


def test_sigterm_drains_streams_finishes_the_clip_and_exits(
    replicas: dict[str, Replica], clips: dict[str, Path], frames: list[bytes]
) -> None:
    """Runs last: it stops replica A."""
    a = replicas["A"]
    streams = [StreamClient(a.ws_url, frames) for _ in range(2)]
    for s in streams:
        s.start()
    clip: dict[str, Any] = {}

    def post() -> None:
        response = _post_clip(a, clips["medium"])
        clip.update(status=response.status_code, body=response.json(), at=time.monotonic())

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    wait_for(
        "replies on both streams",
        lambda: all(any(m["type"] == "frame" for m in s.replies) for s in streams),
        300,
    )
    wait_for("the clip in the pipeline", lambda: a.metric("skelact_active_clips") == 1, 300)
    sent = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)

    for s in streams:
        s.join(SHUTDOWN_S)
        assert not s.is_alive() and s.error is None, (s.error, a.tail())
        assert s.close_code == 1001, (s.close_code, s.replies[-3:], a.tail())
        assert "shutting down" in s.close_reason
        assert s.replies[-1] == {
            "type": "error",
            "code": "shutting_down",
            "message": "the server is shutting down; reconnect shortly",
        }
    assert _late_stream(a.ws_url) in ("ConnectionRefusedError", "shutting_down"), "a new stream was taken"
    with pytest.raises(httpx.ConnectError):  # the listener is closed: no new clip either
        _post_clip(a, clips["short"])
    poster.join(SHUTDOWN_S)
    assert clip.get("status") == 200, (clip, a.tail())
    assert clip["at"] > sent, "the clip was not in flight at SIGTERM"
    response = RecognizeResponse.model_validate(clip["body"])
    assert response.stats.frames_processed == 120, "the clip was finished, not cut"
    try:
        code = a.proc.wait(SHUTDOWN_S + 30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {SHUTDOWN_S + 30:.0f} s after SIGTERM\n{a.tail()}")
    took = time.monotonic() - sent
    # uvicorn ends a graceful shutdown by raising the signal it caught again: 143, as Kubernetes expects
    assert code in (0, -signal.SIGTERM), a.tail()
    assert took < SHUTDOWN_S, f"exit {took:.0f} s after SIGTERM: the whole budget was used"
    assert "Traceback" not in a.log.read_text(errors="replace"), a.tail()
    print(f"exited {took:.1f} s after SIGTERM; clip answered {clip['at'] - sent:.1f} s after it")
