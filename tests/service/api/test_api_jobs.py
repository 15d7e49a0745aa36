"""Asynchronous ``POST /recognize`` jobs and draining on the real app (Starlette TestClient, real
lifespan, real pose and ONNX Runtime): 202 + Location, ``GET /jobs/{id}`` with progress and the
synchronous call's answer, the same errors as the synchronous call, the job cap, what shutdown does
to a job in flight (finished within the drain budget, failed without one), and a draining replica:
readiness 503, no new clips or streams (1001), the ``skelact_draining`` gauge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.core.config import Settings
from service.jobs import JobStore
from service.lifecycle import drain_service
from service.schemas import RecognizeResponse
from tests.conftest import require_data
from tests.service_helpers import trim_video, wait_ready, write_linear_model

pytestmark = pytest.mark.timeout(600)
LABELS = ["stand", "walk", "fall", "sit"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    write_linear_model(root / "linear", LABELS, length=16, fps=10, stride=4)
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = require_data("upfall", "Activity1", "Trial1Cam2.mp4")
    return trim_video(src, tmp_path_factory.mktemp("clips") / "fall.mp4", start=40, frames=36)


def settings(zoo: Path, jobs: Path, **kw: Any) -> Settings:
    return Settings(models_dir=zoo, providers=["cpu"], jobs_dir=jobs, batch_deadline_ms=2, **kw)


@pytest.fixture(scope="module")
def client(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    jobs = tmp_path_factory.mktemp("jobs")
    app = create_app(settings(zoo, jobs, max_concurrent_clips=1, max_queued_clips=1))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def skeletons(frames: int = 60) -> dict[str, Any]:
    """A person whose joints sway: a real skeleton clip's shape, no pose needed."""
    base = np.linspace(0, 1, 33 * 3).reshape(33, 3)
    out = []
    for i in range(frames):
        world = (base + 0.05 * np.sin(i / 5.0)).tolist()
        image = (200 + 100 * base[:, :2] + 3 * i).tolist()
        out.append({"timestamp": i / 10, "people": [{"id": 1, "image": image, "world": world}]})
    return {"width": 640, "height": 480, "frames": out}


def follow(client: TestClient, location: str, timeout: float = 300) -> list[dict[str, Any]]:
    """Every status read until the job is done or failed."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1]["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job still {seen[-1] if seen else None} after {timeout} s"
        r = client.get(location)
        assert r.status_code == 200, r.text
        seen.append(r.json())
        time.sleep(0.05)
    return seen


def submit_video(client: TestClient, clip: Path, query: str = "?mode=async") -> Any:
    with clip.open("rb") as f:
        return client.post("/recognize" + query, files={"file": (clip.name, f, "video/mp4")})


def test_skeleton_job_answers_like_the_synchronous_call(client: TestClient) -> None:
    body = skeletons()
    sync = client.post("/recognize", json=body)
    assert sync.status_code == 200, sync.text
    accepted = client.post("/recognize", json=body, headers={"Prefer": "respond-async, wait=5"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["preference-applied"] == "respond-async"
    job = accepted.json()
    assert accepted.headers["location"] == f"/jobs/{job['job_id']}" and job["state"] == "queued"
    final = follow(client, accepted.headers["location"])[-1]
    assert final["state"] == "done" and final["error"] is None
    assert final["progress"] == {"frames_done": 60, "frames_total": 60}
    same = {"stats"}
    expected = RecognizeResponse.model_validate(sync.json()).model_dump(exclude=same)
    assert RecognizeResponse.model_validate(final["result"]).model_dump(exclude=same) == expected


def test_video_job_reports_progress_and_keeps_the_overlay(client: TestClient, clip: Path) -> None:
    accepted = submit_video(client, clip, "?mode=async&overlay=true&top_k=2")
    assert accepted.status_code == 202, accepted.text
    seen = follow(client, accepted.headers["location"])
    final = seen[-1]
    assert final["state"] == "done", final
    totals = {s["progress"]["frames_total"] for s in seen if s["state"] == "running"}
    assert totals <= {36}, totals
    done = [s["progress"]["frames_done"] for s in seen]
    assert done == sorted(done) and done[-1] == 36
    result = RecognizeResponse.model_validate(final["result"])
    assert result.tracks and len(result.tracks[0].top) == 2
    assert result.overlay_url and client.get(result.overlay_url).status_code == 200


def test_a_bad_clip_fails_the_job_with_the_synchronous_error(client: TestClient, tmp_path: Path) -> None:
    fake = tmp_path / "not-a-video.mp4"
    fake.write_bytes(b"\x00" * 4096)
    sync = submit_video(client, fake, "")
    assert sync.status_code == 422, sync.text
    accepted = submit_video(client, fake)
    assert accepted.status_code == 202
    final = follow(client, accepted.headers["location"])[-1]
    assert final["state"] == "failed" and final["result"] is None
    assert final["error"] == {**sync.json()["error"], "hint": sync.json()["error"].get("hint", "")}


def test_jobs_beyond_the_clip_limits_are_refused(client: TestClient, clip: Path) -> None:
    """max_concurrent_clips 1 + max_queued_clips 1: a third job in progress is refused (503)."""
    first, second = submit_video(client, clip), submit_video(client, clip)
    third = submit_video(client, clip)
    assert (first.status_code, second.status_code) == (202, 202)
    assert third.status_code == 503 and third.json()["error"]["code"] == "busy", third.text
    assert "SKELACT_MAX_QUEUED_CLIPS" in third.json()["error"]["hint"]
    for r in (first, second):
        assert follow(client, r.headers["location"])[-1]["state"] == "done"
    assert client.get("/jobs/" + "f" * 32).json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("budget", [0.0, 300.0], ids=["no-budget", "drain-budget"])
def test_shutdown_finishes_jobs_within_the_drain_budget(
    zoo: Path, clip: Path, tmp_path: Path, budget: float
) -> None:
    """SIGTERM's drain (``Lifecycle.drain``) gives jobs in flight the shutdown budget; a replica
    stopped without one marks them failed at once instead of leaving them running forever."""
    with TestClient(create_app(settings(zoo, tmp_path))) as c:
        wait_ready(c)
        accepted = submit_video(c, clip)
        assert accepted.status_code == 202
        state = c.app.state.service  # type: ignore[attr-defined]
        if budget:
            c.portal.call(drain_service, state, budget)  # type: ignore[union-attr]
    status = JobStore(tmp_path, 3600, 30).status(accepted.json()["job_id"])
    if budget:
        assert status.state == "done" and status.result is not None, status
    else:
        assert status.state == "failed" and status.error is not None, status
        assert status.error.code == "shutting_down"


def test_a_draining_replica_is_not_ready_and_takes_no_new_work(zoo: Path, tmp_path: Path) -> None:
    with TestClient(create_app(settings(zoo, tmp_path))) as c:
        wait_ready(c)
        state = c.app.state.service  # type: ignore[attr-defined]
        c.portal.call(drain_service, state, 5.0)  # type: ignore[union-attr]
        ready = c.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining" and ready.json()["reason"] == "shutting down"
        assert "skelact_draining 1.0" in c.get("/metrics").text
        for headers in ({}, {"Prefer": "respond-async"}):
            r = c.post("/recognize", json=skeletons(10), headers=headers)
            assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready", r.text
        with c.websocket_connect("/stream") as ws:
            assert ws.receive_json()["code"] == "shutting_down"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1001
        assert c.get("/health/live").status_code == 200, "draining is not dead: no restart"
