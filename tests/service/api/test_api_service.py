"""The real app (Starlette TestClient, real lifespan) on real clips: health, models, metrics,
POST /recognize with videos and JSON skeletons, annotated video (bad input: test_reliability_inputs.py,
start-up failures: test_reliability_faults.py).

Uses a tiny generated linear model so these plumbing tests do not depend on a trained one
(tests/service/api/test_api_upfall.py checks labels with the shipped UP-Fall model).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.schemas import ModelsResponse, RecognizeResponse
from tests.conftest import gpu_available, gpu_providers, require_data
from tests.service_helpers import read_video, trim_video, wait_ready, write_linear_model

LABELS = ["stand", "walk", "fall", "sit"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    write_linear_model(root / "linear", LABELS, length=24, fps=12, stride=4)
    write_linear_model(
        root / "linear-image", LABELS, length=24, fps=12, stride=4, coordinates="image", seed=3
    )
    return root


@pytest.fixture(scope="module")
def client(zoo: Path) -> Iterator[TestClient]:
    # providers as in production: GPU first; on a CPU-only machine /health/ready must warn
    settings = Settings(models_dir=zoo, default_model="linear", batch_deadline_ms=2)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of UP-Fall Cam2 (actor + seated bystander), as an mp4 upload."""
    src = require_data("upfall", "Activity1", "Trial1Cam2.mp4")
    return trim_video(src, tmp_path_factory.mktemp("clips") / "fall_cam2.mp4", start=40, frames=36)


def test_health_models_and_metrics(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = wait_ready(client)
    assert ready["ready"] and set(ready["models"]) == {"linear", "linear-image"}
    assert "mediapipe" in ready["pose"]
    # asked for GPU first (the default providers): on the GPU where there is one, else on CPU, said
    assert ready["models"]["linear"] in gpu_providers(), ready
    on_cpu = [w for w in ready["warnings"] if "GPU" in w and "CPU" in w]
    assert bool(on_cpu) == (not gpu_available()), ready["warnings"]
    models = ModelsResponse.model_validate(client.get("/models").json())
    assert models.default == "linear"
    m = {x.name: x for x in models.models}["linear"]
    assert m.labels == LABELS and (m.window.length, m.window.fps, m.window.stride) == (24, 12, 4)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "skelact_stage_seconds" in metrics.text
    assert "skelact_active_streams" in metrics.text and "skelact_frames_dropped_total" in metrics.text
    page = client.get("/")
    assert page.status_code == 200


def test_recognize_video_returns_tracks_primary_clip_and_stats(client: TestClient, short_clip: Path) -> None:
    wait_ready(client)
    with short_clip.open("rb") as f:
        r = client.post("/recognize?top_k=3&overlay=true", files={"file": ("fall_cam2.mp4", f, "video/mp4")})
    assert r.status_code == 200, r.text
    res = RecognizeResponse.model_validate(r.json())
    assert res.video is not None and (res.video.width, res.video.height, res.video.frames) == (640, 480, 36)
    assert res.source == "video" and res.model == "linear"
    assert res.tracks and res.primary_track_id in {t.track_id for t in res.tracks}
    primary = next(t for t in res.tracks if t.primary)
    assert primary.track_id == res.primary_track_id and primary.windows >= 1 and len(primary.top) == 3
    assert res.clip is not None and res.clip.track_id == res.primary_track_id and res.clip.label in LABELS
    for seg in primary.segments:
        assert seg.label in LABELS and seg.start <= seg.end
    st = res.stats
    assert st.frames_processed == 36 and st.windows >= 1 and st.fps_processed > 0
    assert st.stage_ms.pose > 0 and st.stage_ms.decode > 0 and st.stage_ms.classify > 0
    # the annotated video: same size and frame count as the upload
    assert res.overlay_url is not None
    video = client.get(res.overlay_url)
    assert video.status_code == 200 and video.headers["content-type"] == "video/webm"
    out = short_clip.with_name("overlay.webm")
    out.write_bytes(video.content)
    info, frames = read_video(out)
    assert (info.width, info.height) == (640, 480) and len(frames) == 36


def test_json_skeletons_give_the_same_answer_as_the_video(client: TestClient, short_clip: Path) -> None:
    """A client running MediaPipe itself gets what the server's own pose stage would give."""
    wait_ready(client)
    clip = trim_video(short_clip, short_clip.with_name("json_check.mp4"), frames=20)
    from bench.action_sets import clip_skeletons  # the clip posed as a JSON client would

    body = clip_skeletons(clip, max_people=4)
    assert (body["width"], body["height"]) == (640, 480)
    for model in ("linear", "linear-image"):
        r = client.post(f"/recognize?model={model}", json=body)
        assert r.status_code == 200, r.text
        from_json = RecognizeResponse.model_validate(r.json())
        with clip.open("rb") as fh:
            from_video = RecognizeResponse.model_validate(
                client.post(f"/recognize?model={model}", files={"file": ("c.mp4", fh, "video/mp4")}).json()
            )
        assert from_json.source == "skeleton" and from_json.video is None
        assert [t.track_id for t in from_json.tracks] == [t.track_id for t in from_video.tracks]
        assert from_json.clip is not None and from_video.clip is not None
        assert from_json.clip.label == from_video.clip.label
        assert from_json.clip.confidence == pytest.approx(from_video.clip.confidence, abs=1e-3)


def test_a_person_who_leaves_and_returns_is_one_track(client: TestClient) -> None:
    """The tracker closes a track after a second unseen; /recognize joins the fragments again."""
    wait_ready(client)
    base = np.linspace(0, 1, 33 * 3, dtype=np.float32).reshape(33, 3)
    frames = []
    for i in range(80):  # 4 s at 20 fps, nobody in view from 1.0 s to 2.5 s
        t = i * 0.05
        people = []
        if t < 1.0 or t >= 2.5:
            image = (base * [120, 300, 50] + [260 + 5 * np.sin(t), 100, 0]).tolist()
            world = (base - 0.5).tolist()
            people.append({"image": image, "world": world})
        frames.append({"timestamp": t, "people": people})
    r = client.post("/recognize", json={"width": 640, "height": 480, "frames": frames})
    assert r.status_code == 200, r.text
    res = RecognizeResponse.model_validate(r.json())
    assert len(res.tracks) == 1 and res.tracks[0].members == [1, 2], res.tracks
    person = res.tracks[0]
    assert person.primary and person.frames == 50 and person.first_seen == 0 and person.last_seen == 3.95
    assert res.clip is not None and res.clip.track_id == person.track_id
