"""Several people at once through POST /recognize, as a user gets it (the default settings, the
whole clip): one track per person, checked against the hand-made ground truth in groundtruth/.

The one place the suite counts the people of felix_exercise.avi (three people side by side,
small: 384x288) and mmaction2_demo_skeleton.mp4 (two people at arm's length, 1920x1080).
The response has no boxes per frame, so a track is matched to a person by how many frames it
covers; floors are a little below what the default service measured on 2026-12-03 (load ~7).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.groundtruth import load_truth
from service.app import create_app
from service.core.config import Settings
from service.schemas import RecognizeResponse
from tests.conftest import require_data
from tests.service_helpers import wait_ready, write_linear_model

# clip -> the share of their labelled frames each person's track must cover, best covered first.
# felix: measured 0.98 / 0.77 / 0.04 -- the default service finds the left man only at 37.7 s of
# 39 s (issue 18; tiles, off by default, find him): two of three people is today's level, not a
# sensible floor, and is asserted as that until issue 18's detection work raises it.
# mmaction: measured 1.0 / 0.97.
FLOORS = {
    "clips/felix_exercise.avi": (0.9, 0.7),
    "clips/mmaction2_demo_skeleton.mp4": (0.9, 0.9),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    zoo = tmp_path_factory.mktemp("zoo")
    write_linear_model(zoo / "linear", ["a", "b", "c"], length=16, fps=10, stride=4)
    with TestClient(create_app(Settings(models_dir=zoo, providers=["cpu"]))) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize("clip", sorted(FLOORS))
def test_each_person_gets_a_track(client: TestClient, clip: str) -> None:
    video = require_data(*clip.split("/"))
    info, truth = load_truth(clip)
    labelled: dict[int, int] = {}  # person -> frames in which they count
    for rows in truth.values():
        for row in rows:
            if row.counted:
                labelled[row.person] = labelled.get(row.person, 0) + 1
    with video.open("rb") as f:
        r = client.post("/recognize", files={"file": (Path(clip).name, f, "video/mp4")})
    assert r.status_code == 200, r.text
    res = RecognizeResponse.model_validate(r.json())
    assert res.stats.frames_processed == info.frames
    # tracks and people, each in order of frames covered
    tracks = sorted(res.tracks, key=lambda t: -t.frames)
    people = sorted(labelled.values(), reverse=True)
    coverage = [t.frames / n for t, n in zip(tracks, people, strict=False)]
    found = (tracks, coverage)
    floors = FLOORS[clip]
    assert len(coverage) >= len(floors) and all(c >= f for c, f in zip(coverage, floors, strict=False)), found
    assert len(res.tracks) <= len(people) + 1, found  # ids do not churn: a person is one track
    assert sum(t.primary for t in res.tracks) == 1
    steady = tracks[: len(floors)]
    assert all(t.windows >= 1 and t.top for t in steady), steady
