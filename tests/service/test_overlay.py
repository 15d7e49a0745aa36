"""The annotated video of ``POST /recognize?overlay=true`` on the real app and real clips: labels as
of each frame (nothing before it was decided), captions inside the frame, at most 720p, and a
``wall_s`` that includes the encoding."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.overlay import OverlayPerson, colour, draw
from service.schemas import RecognizeResponse
from tests.conftest import require_data
from tests.service_helpers import MODEL_ZOO, read_video, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=MODEL_ZOO, providers=["cpu"]))) as c:
        wait_ready(c, timeout=300)
        yield c


def _recognize(client: TestClient, clip: Path) -> tuple[RecognizeResponse, float]:
    t0 = time.monotonic()
    with clip.open("rb") as f:
        r = client.post("/recognize?overlay=true", files={"file": (clip.name, f, "video/mp4")})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return RecognizeResponse.model_validate(r.json()), elapsed


def _frames(client: TestClient, res: RecognizeResponse, tmp: Path) -> list[np.ndarray]:
    assert res.overlay_url is not None
    video = client.get(res.overlay_url)
    assert video.status_code == 200
    out = tmp / "overlay.webm"
    out.write_bytes(video.content)
    return [f.rgb for f in read_video(out)[1]]


def test_a_1080p_clip_is_annotated_at_720p_and_timed_honestly(client: TestClient, tmp_path: Path) -> None:
    res, elapsed = _recognize(client, require_data("clips", "mmaction2_demo_skeleton.mp4"))
    assert res.video is not None and (res.video.width, res.video.height) == (1920, 1080)
    frames = _frames(client, res, tmp_path)
    assert len(frames) == res.video.frames and frames[0].shape[:2] == (720, 1280)
    st = res.stats
    # wall_s covers the pass (at least its pose time on one lane) and the annotated video after it
    assert st.pose_lanes == 1 and st.overlay_s is not None and st.overlay_s > 0
    assert st.wall_s >= st.overlay_s + st.stage_ms.pose / 1e3, st
    assert st.wall_s <= elapsed and st.stage_ms.encode / 1e3 >= st.overlay_s
    assert st.fps_processed == pytest.approx(st.frames_processed / st.wall_s, rel=1e-2)
    print(f"{res.video.frames} frames 1080p: overlay {st.overlay_s:.1f} s, wall {st.wall_s:.1f} s")


def test_labels_are_those_known_at_each_frame(client: TestClient, tmp_path: Path) -> None:
    """UP-Fall Activity1/Trial1Cam2: the actor falls (the clip is a fall) beside a seated bystander."""
    from service.overlay import caption_at, header_at
    res, _ = _recognize(client, require_data("upfall", "Activity1", "Trial1Cam2.mp4"))
    assert res.clip is not None and res.clip.fall and res.clip.fall_time is not None, res.clip
    frames = _frames(client, res, tmp_path)
    assert res.video is not None and len(frames) == res.video.frames
    window = res.window.seconds
    times = [i / res.video.fps for i in range(res.video.frames)]
    for t in times:
        header = header_at(res, t)
        assert (res.clip.label in header) == (t >= res.clip.fall_time - 1e-3), (t, header)
        for track in res.tracks:
            caption = caption_at(track, window, t)
            assert caption.isascii(), caption  # OpenCV's fonts draw "???" for anything else
            if t < min(track.first_seen + window, track.last_seen) - 1e-3:
                assert "warming up" in caption, (t, caption)
            elif any(s.start <= t <= s.end for s in track.segments):
                assert any(s.label in caption for s in track.segments), (t, caption)
    # the header strip of the first frame and of the last differ (time, then the fall)
    first, last = frames[0][:24], frames[-1][:24]
    assert np.abs(first.astype(int) - last.astype(int)).sum() > 0


def test_captions_stay_inside_the_frame() -> None:
    """A person at the top right corner with a long label, and a header longer than the frame is
    wide: both boxes are drawn whole, inside the frame (moved left, or the text made smaller)."""
    rgb = np.zeros((240, 320, 3), np.uint8)
    caption = "#7 falling sitting in empty chair 0.87"
    person = OverlayPerson(7, np.zeros((33, 3), np.float32), (300.0, 2.0, 319.0, 200.0), caption)
    header = "upfall-stgcnpp-lite  t=12.34s  FALL: falling forward using hands at 4.50s"
    out = draw(rgb, [person], header=header)
    font_w = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * 320 / 640, 1)[0][0]
    caption_cols = np.nonzero(np.all(out[0] == np.array(colour(7), np.uint8), axis=1))[0]
    assert caption_cols.size and caption_cols.max() - caption_cols.min() >= font_w, caption_cols
    header_cols = np.nonzero(np.all(out == np.array((40, 40, 40), np.uint8), axis=2))[1]
    assert header_cols.size and header_cols.max() < 319, "the header box runs off the frame"
