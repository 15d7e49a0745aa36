"""MediaPipe's pose landmarker as two graphs with the ROI choice in Python (perception/pose/graph.py).

The split must change nothing by itself: with MediaPipe's association rule the landmarks are those
of the Tasks ``PoseLandmarker`` to the bit. The one-to-one rule must drop the duplicate landmark
passes of a tracked person and keep two people standing close apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from perception.pose.bundle import ensure_pose_bundle
from perception.pose.estimator import TasksPoseEstimator, create_pose_estimator
from perception.pose.graph import GraphPose, PoseGraph, Roi, select_rois
from perception.video import Frame, VideoReader
from skeleton.types import PersonPose
from tests.conftest import require_data


def _frames(*relative: str, count: int, max_side: int | None = None) -> list[Frame]:
    with VideoReader(require_data(*relative), max_side=max_side) as reader:
        return list(itertools.islice(reader, count))


@pytest.fixture(scope="module")
def walking() -> list[Frame]:
    """UP-Fall walking (the stream benchmark's clip): one person, duplicate ROIs in some frames."""
    return _frames("upfall", "Activity6", "Trial1Cam1.mp4", count=60)


@pytest.fixture(scope="module")
def two_people() -> list[Frame]:
    """NTU RGB+D: two people standing close, analysed at 640 px as the service does."""
    return _frames("clips", "mmaction2_demo_skeleton.mp4", count=30, max_side=640)


def _graph(num_poses: int, association: str) -> PoseGraph:
    return PoseGraph(ensure_pose_bundle(), num_poses, 0.5, 0.5, 0.8, association)


def _run_graph(
    frames: list[Frame], num_poses: int, association: str
) -> Iterator[tuple[list[GraphPose], int]]:
    graph = _graph(num_poses, association)
    try:
        for i, f in enumerate(frames):
            yield graph.process(f.rgb, i * 33), graph.last_landmark_passes
    finally:
        graph.close()


def _run_stock(frames: list[Frame], num_poses: int) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(ensure_pose_bundle())),
        running_mode=vision.RunningMode.VIDEO,
        num_poses=num_poses,
        min_tracking_confidence=0.8,
    )
    out = []
    with vision.PoseLandmarker.create_from_options(options) as landmarker:
        for i, f in enumerate(frames):
            result = landmarker.detect_for_video(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=f.rgb), i * 33
            )
            out.append(
                [
                    (
                        np.array([(p.x, p.y, p.z) for p in lms], np.float32),
                        np.array([p.visibility for p in lms], np.float32),
                        np.array([(p.x, p.y, p.z) for p in world], np.float32),
                    )
                    for lms, world in zip(result.pose_landmarks, result.pose_world_landmarks, strict=True)
                ]
            )
    return out


@pytest.mark.parametrize(("clip", "num_poses"), [("walking", 3), ("two_people", 3), ("walking", 1)])
def test_mediapipe_rule_is_bitwise_the_tasks_landmarker(
    clip: str, num_poses: int, request: pytest.FixtureRequest
) -> None:
    """num_poses 3: the service's default shape (people + spare slot), detector every frame;
    num_poses 1: detector only when tracking is lost, and MediaPipe smooths the landmarks."""
    frames = request.getfixturevalue(clip)
    stock = _run_stock(frames, num_poses)
    passes = []
    for (ours, n), theirs in zip(_run_graph(frames, num_poses, "mediapipe"), stock, strict=True):
        passes.append(n)
        assert len(ours) == len(theirs)
        for p, (xyz, vis, world) in zip(ours, theirs, strict=True):
            assert np.array_equal(p.landmarks, xyz) and np.array_equal(p.visibility, vis)
            assert np.array_equal(p.world, world)
    assert sum(len(s) for s in stock) >= len(frames) // 2  # people were found
    if num_poses > 1:
        assert max(passes) > (2 if clip == "two_people" else 1)  # the association merged or kept extra ROIs


def test_one_to_one_drops_duplicate_passes_and_keeps_poses(walking: list[Frame]) -> None:
    stock = list(_run_graph(walking, 3, "mediapipe"))
    ours = list(_run_graph(walking, 3, "one-to-one"))
    assert max(n for _, n in stock) >= 2 and max(n for _, n in ours) == 1
    # the same frames with a person
    assert [min(len(p), 1) for p, _ in ours] == [min(len(p), 1) for p, _ in stock]
    # mostly the same to the bit (a detection above MediaPipe's threshold wins in both rules);
    # elsewhere close to one of MediaPipe's poses (it had a duplicate there)
    same = with_person = 0
    for (a, _), (b, _) in zip(stock, ours, strict=True):
        if not b:
            continue
        with_person += 1
        gaps = [float(np.median(np.abs(p.landmarks[:, :2] - b[0].landmarks[:, :2]).max(axis=1))) for p in a]
        same += min(gaps) == 0.0
        assert min(gaps) < 0.03  # normalised: a few pixels of this 640x480 frame
    assert with_person >= len(walking) // 2 and same >= 0.6 * with_person


def test_one_to_one_keeps_two_people_close_together(two_people: list[Frame]) -> None:
    counts = [len(p) for p, _ in _run_graph(two_people, 3, "one-to-one")]
    assert sum(c == 2 for c in counts) >= 0.9 * len(two_people) and max(counts) == 2
    est = create_pose_estimator("tasks", max_people=2, association="one-to-one")
    try:
        people = [len(est.estimate(f.rgb, f.timestamp_s)) for f in two_people]
        assert est.config()["association"] == "one-to-one"  # type: ignore[attr-defined]
    finally:
        est.close()
    assert sum(c == 2 for c in people) >= 0.9 * len(two_people)


def _roi(x: float, y: float, size: float = 0.4) -> Roi:
    return Roi(x, y, size, size)


def test_select_rois_rules() -> None:
    person, same_again, neighbour = _roi(0.5, 0.5), _roi(0.55, 0.5), _roi(0.8, 0.5)
    assert 0.5 < person.iou(same_again) <= 0.8 and person.iou(neighbour) < 0.5
    # MediaPipe: a fresh detection overlapping less than the threshold is a second ROI
    assert select_rois([person], [same_again], "mediapipe", 0.8, 5) == [0, 1]
    assert select_rois([person], [_roi(0.51, 0.5)], "mediapipe", 0.8, 5) == [1]
    # one-to-one: the detection replaces the person it matches; a new person is added
    assert select_rois([person], [same_again, neighbour], "one-to-one", 0.8, 5) == [1, 2]
    # a detection between two tracked people takes one of them, never both
    left, right = _roi(0.4, 0.5), _roi(0.62, 0.5)
    between = _roi(0.5, 0.5)
    assert left.iou(between) > 0.5 and right.iou(between) > 0.5
    assert len(select_rois([left, right], [between], "one-to-one", 0.8, 5)) == 2
    assert len(select_rois([left, right], [between], "mediapipe", 0.5, 5)) == 1
    assert select_rois([person, neighbour], [], "one-to-one", 0.8, 1) == [0]  # at most num_poses
    with pytest.raises(ValueError, match="association"):
        select_rois([], [], "nearest", 0.8, 5)


def test_forgotten_poses_are_not_tracked_into_the_next_frame(
    two_people: list[Frame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`PoseGraph.forget`: a pose the caller rejected (a duplicate, a garbled skeleton) loses its
    tracked ROI, so the landmark model does not keep it alive; the others stay tracked."""
    import perception.pose.graph as graph_module

    seen: list[list[Roi]] = []
    real = graph_module.select_rois

    def spy(tracked: list[Roi], *args: object, **kwargs: object) -> list[int]:
        seen.append(list(tracked))
        return real(tracked, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(graph_module, "select_rois", spy)
    graph = _graph(3, "one-to-one")
    try:
        for i, f in enumerate(two_people[:3]):
            poses = graph.process(f.rgb, i * 33)
        assert len(poses) == 2 and len(graph.tracked) == 2
        kept = graph.tracked[1]
        graph.forget([0])
        graph.process(two_people[3].rgb, 3 * 33)
        assert seen[-1] == [kept]  # only the ROI of the pose not forgotten was carried
        graph.process(two_people[4].rgb, 4 * 33)
        assert len(seen[-1]) == 2  # forgetting lasts one frame: whoever is found again is tracked
    finally:
        graph.close()


def test_a_stream_posed_on_two_estimators_in_turn_is_posed_as_on_one(walking: list[Frame]) -> None:
    """`TasksPoseEstimator.carry_from`: a stream whose frames go to its single-threaded lane and
    its solo estimator in turn gets, with the hand-over at each switch, bitwise the poses one
    estimator gives every frame; without it the estimator switched to starts from its own stale
    ROIs (the real-pace stream's results varied from run to run)."""
    frames = walking[:36]
    owner = [(i // 6) % 2 for i in range(len(frames))]  # six frames each, in turn

    def run(mode: str) -> list[tuple[PersonPose, ...]]:
        made = [TasksPoseEstimator() for _ in range(2)]
        out: list[tuple[PersonPose, ...]] = []
        last: TasksPoseEstimator | None = None
        try:
            for f, k in zip(frames, owner, strict=True):
                est = made[0] if mode == "one" else made[k]
                if mode == "carry" and last is not None and last is not est:
                    assert est.carry_from(last)
                out.append(est.estimate(f.rgb, f.timestamp_s))
                last = est
        finally:
            for est in made:
                est.close()
        return out

    def same(a: list[tuple[PersonPose, ...]], b: list[tuple[PersonPose, ...]]) -> bool:
        return all(
            len(x) == len(y) and all(np.array_equal(p.image, q.image) for p, q in zip(x, y, strict=True))
            for x, y in zip(a, b, strict=True)
        )

    one = run("one")
    assert same(run("carry"), one)
    assert not same(run("switch"), one)
