"""Pose lanes: a clip's frames spread over several estimators, in the one order every caller uses.

Frame i goes to lane i mod L (each lane its own estimator, so L frames can be in pose at once on
L cores) and frames are tracked in order. ``POST /recognize`` (`service.clips.job`) runs this order
concurrently; `run_lanes` runs it one frame after another (offline extraction, benchmarks), with
the same poses. `run_lanes` can also hand each estimator the people the tracks expect (as of frame
i - L, the latest tracked when frame i starts); the service does not: on the labelled clips those
hints changed nothing with one lane (felix_exercise.avi) and cost identity switches where a walker
passes people behind glass (UP-Fall Activity6/Trial2Cam1 clip view: 28 switches, none without).

How many lanes by default: `default_lanes`, one per core, but never so many that a lane's estimator
sees fewer than ``MIN_LANE_FPS`` frames a second (MediaPipe follows a person from one of its frames
to its next by the landmark model's own ROI, which loses small or fast people across big steps),
for the service's clips and offline extraction alike, so that a model is trained on the poses the
service gives it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from perception.pose.estimator import PoseEstimator
from perception.video import Frame
from skeleton.types import PersonPose

__all__ = ["MAX_DEFAULT_LANES", "MIN_LANE_FPS", "default_lanes", "run_lanes"]

# More lanes than this buy little (the tracker then waits on the slowest of many frames) and each
# one is another estimator in memory.
MAX_DEFAULT_LANES = 4

# Frames a second each lane's estimator must see at least. A lane's estimator follows people by
# its own ROIs from one of its frames to its next; the fewer frames it sees, the more it loses.
# Measured in the clip view against the labelled clips (2026-12-03, `python -m bench.poses dump
# --lanes 2` and `python -m bench tracking`): at 5 fps a lane (felix_exercise.avi, 10 fps on two
# lanes) MOTA fell from 97 to 66 with 6 identity switches; at 9 (UP-Fall, 18 fps) the seated
# bystander of Activity9/Trial1Cam2 from 95 % to 91 % of frames; at 14 (mmaction2_demo_skeleton,
# 28 fps) the left man of the embracing pair from 100 % to 82 %. So lanes only where each still
# sees 15 (a 30 fps camera: two lanes; the nominal rate counts: 29.97 is 30).
MIN_LANE_FPS = 15.0


def default_lanes(fps: float | None = None, cores: int | None = None) -> int:
    """Pose lanes of a clip of ``fps`` analysed frames a second by default: one per core
    (``os.cpu_count()``), at most ``MAX_DEFAULT_LANES``, and at most ``fps / MIN_LANE_FPS`` (the
    nominal rate, rounded)."""
    lanes = min(cores if cores is not None else (os.cpu_count() or 1), MAX_DEFAULT_LANES)
    if fps is not None and fps > 0:
        lanes = min(lanes, int(round(fps) // MIN_LANE_FPS))
    return max(1, lanes)


Expected = Callable[[float], Sequence[PersonPose]]
Consume = Callable[[Frame, tuple[PersonPose, ...], float], None]


def run_lanes(
    frames: Iterable[Frame],
    estimators: Sequence[PoseEstimator],
    consume: Consume,
    expected: Expected | None = None,
) -> int:
    """Pose every frame on lane i mod len(estimators) and hand (frame, poses, pose seconds) to
    ``consume`` in frame order. ``expected(t)``: where the tracks ``consume`` keeps expect people at
    time t; asked before frame i is posed, once frame i - L has been consumed. Returns the frames
    posed."""
    lanes = len(estimators)
    if lanes < 1:
        raise ValueError("run_lanes needs at least one estimator")
    in_flight: deque[tuple[Frame, tuple[PersonPose, ...], float]] = deque()
    count = 0
    for frame in frames:
        hints = expected(frame.timestamp_s) if expected is not None else ()
        t0 = time.perf_counter()
        poses = estimators[count % lanes].estimate(frame.rgb, frame.timestamp_s, hints)
        in_flight.append((frame, poses, time.perf_counter() - t0))
        count += 1
        if len(in_flight) == lanes:
            consume(*in_flight.popleft())
    while in_flight:
        consume(*in_flight.popleft())
    return count
