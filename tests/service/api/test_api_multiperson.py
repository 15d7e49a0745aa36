"""Several people at once through POST /recognize: one track (timeline, top-k) per person.

felix_exercise.avi shows three people side by side (small, 384x288: the pose stage's tiles find
them); mmaction2_demo_skeleton.mp4 two people close together at 1920x1080 (analysed at 640 px).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.schemas import RecognizeResponse
from tests.conftest import require_data
from tests.service_helpers import trim_video, wait_ready, write_linear_model


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    zoo = tmp_path_factory.mktemp("zoo")
    write_linear_model(zoo / "linear", ["a", "b", "c"], length=16, fps=10, stride=4)
    settings = Settings(models_dir=zoo, providers=["cpu"], pose_tiles=True, pose_max_side=640)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize(
    ("clip", "frames", "people"),
    [
        ("felix_exercise.avi", 30, 3),
        ("mmaction2_demo_skeleton.mp4", 30, 2),
    ],
)
def test_each_person_gets_a_track(
    client: TestClient, tmp_path: Path, clip: str, frames: int, people: int
) -> None:
    video = trim_video(require_data("clips", clip), tmp_path / f"{Path(clip).stem}.mp4", frames=frames)
    with video.open("rb") as f:
        r = client.post("/recognize", files={"file": (video.name, f, "video/mp4")})
    assert r.status_code == 200, r.text
    res = RecognizeResponse.model_validate(r.json())
    # people present for a good part of the clip (short detector blips are not people)
    steady = [t for t in res.tracks if t.frames >= frames // 3]
    assert len(steady) == people, [(t.track_id, t.frames) for t in res.tracks]
    assert sum(t.primary for t in res.tracks) == 1
    assert all(t.windows >= 1 and t.top for t in steady)
