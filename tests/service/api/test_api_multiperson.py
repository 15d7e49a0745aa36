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


def test_frames_give_each_persons_box_in_every_frame(client: TestClient, tmp_path: Path) -> None:
    """``frames=boxes|landmarks``: who is where in each frame, under the ids of ``tracks``, in the
    video's own pixels (the clip is 1920x1080, analysed at 640 px)."""
    video = trim_video(require_data("clips", "mmaction2_demo_skeleton.mp4"), tmp_path / "pair.mp4", frames=20)
    answers = {}
    for frames in ("none", "boxes", "landmarks"):
        with video.open("rb") as f:
            r = client.post(
                "/recognize", params={"frames": frames}, files={"file": (video.name, f, "video/mp4")}
            )
        assert r.status_code == 200, r.text
        answers[frames] = RecognizeResponse.model_validate(r.json())
    assert answers["none"].frames is None
    res = answers["boxes"]
    assert res.frames is not None and res.video is not None
    assert [f.frame for f in res.frames] == list(range(res.video.frames))
    ids = {t.track_id for t in res.tracks}
    seen: dict[int, int] = {}
    for f in res.frames:
        assert len({p.track_id for p in f.people}) == len(f.people)  # one box per person and frame
        for p in f.people:
            assert p.track_id in ids and p.landmarks is None
            x0, y0, x1, y1 = p.box
            assert 0 <= x0 < x1 <= res.video.width and 0 <= y0 < y1 <= res.video.height
            seen[p.track_id] = seen.get(p.track_id, 0) + 1
    # each track's frame count is the frames it has a box in; the two people fill most frames
    assert seen == {t.track_id: t.frames for t in res.tracks}
    assert sum(len(f.people) == 2 for f in res.frames) >= 16
    assert max(p.box[2] for f in res.frames for p in f.people) > 640  # video pixels, not analysed ones
    lm = answers["landmarks"].frames
    assert lm is not None
    for a, b in zip(res.frames, lm, strict=True):
        assert [p.box for p in a.people] == [p.box for p in b.people]
        for p in b.people:
            assert p.landmarks is not None and len(p.landmarks) == 33 and len(p.landmarks[0]) == 3
    r = client.post(
        "/recognize", params={"frames": "skeletons"}, files={"file": ("x.mp4", b"x", "video/mp4")}
    )
    assert r.status_code == 422
