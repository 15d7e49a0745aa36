"""Pose lanes (perception/pose/lanes.py): the one frame order POST /recognize and offline
extraction share, and the one default both take."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from perception.pose.lanes import MAX_DEFAULT_LANES, default_lanes, run_lanes
from perception.video import Frame
from skeleton.types import PersonPose


class _Lane:
    """Records which frames it was given and the expected people it got with each."""

    name = "lane"
    max_people = 1

    def __init__(self, log: list[tuple[int, int, tuple[PersonPose, ...]]], lane: int) -> None:
        self.log, self.lane = log, lane

    def estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        self.log.append((self.lane, int(frame_rgb[0, 0, 0]), tuple(expected)))
        return ()

    def close(self) -> None:
        pass


def _frames(n: int) -> list[Frame]:
    return [Frame(i, i / 10, np.full((2, 2, 3), i, np.uint8)) for i in range(n)]


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_frame_i_on_lane_i_mod_l_with_the_tracks_as_of_frame_i_minus_l(lanes: int) -> None:
    calls: list[tuple[int, int, tuple[PersonPose, ...]]] = []
    consumed: list[int] = []
    asked: list[tuple[float, int]] = []  # (time asked for, frames consumed by then)

    def expected(t: float) -> tuple[PersonPose, ...]:
        asked.append((t, len(consumed)))
        return ()

    n = run_lanes(
        _frames(7),
        [_Lane(calls, k) for k in range(lanes)],
        lambda f, poses, s: consumed.append(f.index),
        expected,
    )
    assert n == 7 and consumed == list(range(7))
    assert [(lane, frame) for lane, frame, _ in calls] == [(i % lanes, i) for i in range(7)]
    # frame i is posed once frames 0 .. i - lanes are tracked, and no later one
    assert asked == [(i / 10, max(0, i - lanes + 1)) for i in range(7)]


def test_no_lanes_is_an_error() -> None:
    with pytest.raises(ValueError, match="estimator"):
        run_lanes(_frames(1), [], lambda f, p, s: None)


def test_one_default_for_the_service_and_extraction() -> None:
    """POST /recognize's lanes and training.extract's come from `default_lanes`: one per core, as
    many as the frame rate allows."""
    import inspect

    from service.core.config import Settings
    from training.extract import extract_video

    assert default_lanes(cores=1) == 1 and default_lanes(cores=2) == 2
    assert default_lanes(cores=64) == MAX_DEFAULT_LANES
    # each lane sees at least MIN_LANE_FPS frames a second (the clips where fewer lost people:
    # felix_exercise.avi at 10 fps, UP-Fall at 18, mmaction2_demo_skeleton at 28 get one lane);
    # a 30 fps (29.97) camera two, 60 fps four
    rates = (5.0, 10.0, 18.0, 28.05, 29.97, 30.0, 60.0)
    assert [default_lanes(fps, cores=8) for fps in rates] == [1, 1, 1, 1, 2, 2, 4]
    assert Settings(pose_workers=16).clip_lanes(29.97) == default_lanes(29.97)
    assert Settings(pose_workers=1).clip_lanes(30.0) == 1  # never more lanes than pose workers
    assert Settings(pose_workers=16, clip_pose_lanes=3).clip_lanes(10.0) == 3  # asked for
    assert inspect.signature(extract_video).parameters["lanes"].default is None  # None: default_lanes()
