"""Which skeletons count as people (perception/pose/person.py, perception/pose/graph.py), on the
real labelled clips with the real MediaPipe estimator, scored against the committed ground truth
(issue 18: no phantom track of 3 frames or more; the bystander kept while someone walks close).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.groundtruth import load_index, load_truth
from bench.tracking import _iou_matrix
from perception.pose.person import MIN_RELATIVE_SIZE, plausible_people, select_people, size_floor
from perception.video import Frame
from skeleton.types import BoundingBox, PersonPose
from tests.conftest import require_data


def _pose(x0: float, y0: float, x1: float, y1: float, score: float = 0.9) -> PersonPose:
    """A skeleton whose landmarks spread over the box (joints on a grid inside it)."""
    rng = np.random.default_rng(0)
    image = np.zeros((33, 3), np.float32)
    image[:, 0] = x0 + rng.random(33) * (x1 - x0)
    image[:, 1] = y0 + rng.random(33) * (y1 - y0)
    image[0, :2], image[32, :2] = (x0, y0), (x1, y1)
    return PersonPose(
        image, np.zeros((33, 3), np.float32), np.ones(33, np.float32), BoundingBox(x0, y0, x1, y1), score
    )


def test_size_floor_drops_skeletons_far_smaller_than_the_person() -> None:
    person = _pose(100, 20, 180, 240)  # 220 px tall
    tiny = _pose(10, 0, 30, 25)  # a garbled skeleton at the top edge: 25 px, 0.11 of the person
    beside = _pose(300, 100, 360, 210)  # someone farther away: 110 px, 0.5 of the person
    lying = _pose(200, 200, 400, 240)  # wide, not tall: its longer side (200 px) counts
    kept = size_floor([person, tiny, beside, lying])
    assert kept == [person, beside, lying]
    assert size_floor([tiny]) == [tiny]  # alone, nobody to compare with: kept
    assert size_floor([person, tiny], 0.0) == [person, tiny]
    assert 0.09 * 220 < MIN_RELATIVE_SIZE * 220 < 0.44 * 220  # between the phantoms and the people
    assert select_people([tiny, person], 4) == (person,)
    assert plausible_people([tiny, person]) == [person]


def _frames(video: str, count: int) -> list[Frame]:
    import itertools

    from perception.video import VideoReader
    from service.core.config import Settings

    with VideoReader(require_data(*video.split("/")), max_side=Settings().pose_max_side) as reader:
        return list(itertools.islice(reader, count))


@pytest.mark.slow
def test_the_phantoms_over_the_lifter_are_gone_on_two_lanes() -> None:
    """stgcn_clean_and_jerk.mp4 (one lifter, 29.97 fps: POST /recognize poses it on two lanes):
    the service's estimator, tracking and clip stitching on the saved raw poses. Before (issue 18
    part 2): phantom tracks of 50 and 20 frames (skeletons of 6-15 % of the frame's height over
    the barbell and the banner), 71 false positives; with the size floor and `PoseGraph.forget`
    (round 3), one of 7 frames (a garbled skeleton over the plate, 0.4-0.5 of the lifter's size,
    frames 145-154: it flickers, so it never passes the tracker's probation, round 4), 8 false
    positives; now none, 1 false positive (measured 2026-12-03).

    The estimator must stop tracking the skeletons the size floor rejects (`PoseGraph.forget`):
    the raw poses held one in 2 frames (164, 211); without the call, in 63 (frames 164-249, the
    rejected skeleton's ROI tracked on from frame to frame)."""
    from bench.poses import dump_clip, score_dump
    from perception.pose.person import choose_people

    require_data("clips", "stgcn_clean_and_jerk.mp4")
    info = load_index()["clips/stgcn_clean_and_jerk.mp4"]
    dump = dump_clip(info, lanes=2)
    rejected = [f for f, raw in zip(dump.frames, dump.raw, strict=True) if choose_people(raw, 4)[1]]
    assert len(rejected) <= 8, f"size-floored skeletons tracked on in frames {rejected}"
    run, s = score_dump(dump)
    assert s.phantoms == []
    assert s.false_positives <= 4
    assert s.recall_per_person[1] >= 0.99
    assert len({t for tracks in run.tracks for t, _ in tracks}) == 1


def test_no_phantom_along_the_barbell_in_the_streamed_frames() -> None:
    """stgcn_clean_and_jerk.mp4 as a webcam client streams it (JPEG, quality 80, 10 fps) on one
    lane: MediaPipe draws a garbled skeleton along the barbell held overhead (frames 109-145, a box
    0.36-0.50 inside the lifter's) that the uncompressed frames do not show. Round 5's
    `inside_confirmed` of 0.5 let it confirm (12 frames, the real-time stream's phantom); at 0.25
    it never does (measured 2026-12-03: no phantom, the lifter 98 % of the frames)."""
    from bench.poses import dump_clip, score_dump

    require_data("clips", "stgcn_clean_and_jerk.mp4")
    info = load_index()["clips/stgcn_clean_and_jerk.mp4"]
    dump = dump_clip(info, rate=10, lanes=1, jpeg=80)
    drawn = [f for f, raw in zip(dump.frames, dump.raw, strict=True) if len(select_people(raw, 4)) > 1]
    assert len(drawn) >= 6, "the barbell skeleton is no longer drawn: this test proves nothing"
    run, s = score_dump(dump)
    assert s.phantoms == []
    assert s.false_positives <= 3
    assert s.recall_per_person[1] >= 0.95
    assert len({t for tracks in run.tracks for t, _ in tracks}) == 1


def test_no_phantom_below_the_lying_actor_in_the_streamed_frames() -> None:
    """UP-Fall Activity5/Trial2Cam1 as a webcam client streams it (JPEG, quality 80, 15 fps) on one
    lane: while the actor lies along the bottom edge, MediaPipe draws a second skeleton beside him,
    scoring 0.28-0.39 and mostly below the frame (frames 48-63). Round 6 confirmed it (a 14-frame
    phantom); `TrackerConfig.border_cut_in_frame` keeps it tentative (measured 2026-12-04: no
    phantom, no false positive, the actor in 97 % of the frames)."""
    from bench.poses import dump_clip, score_dump
    from perception.tracking.geometry import in_frame_fraction

    require_data("upfall", "Activity5", "Trial2Cam1.mp4")
    info = load_index()["upfall/Activity5/Trial2Cam1.mp4"]
    dump = dump_clip(info, rate=15, lanes=1, jpeg=80)
    size = (dump.width, dump.height)
    cut = [
        f
        for f, raw in zip(dump.frames, dump.raw, strict=True)
        if any(p.score < 0.4 and in_frame_fraction(p.image[:, :2], size) < 0.6 for p in select_people(raw, 4))
    ]
    assert len(cut) >= 6, "the skeleton below the border is no longer drawn: this test proves nothing"
    _, s = score_dump(dump)
    assert s.phantoms == []
    assert s.false_positives <= 3
    assert s.recall_per_person[1] >= 0.93
    _, without = score_dump(dump, tracker={"border_cut_in_frame": None})
    assert without.phantoms, "without the rule the skeleton confirms: round 6's phantom"


@pytest.mark.slow
def test_the_bystander_stays_while_the_walker_passes_close() -> None:
    """UP-Fall Activity6/Trial1Cam2, frames 1-120: the walker comes close to the camera (his pose
    ROI then covers the seated bystander's) and walks past. The bystander's skeleton must stay in
    every frame he is labelled in but a few. Before: a tracked ROI lying inside a much larger one
    was dropped as a partial duplicate, and the bystander was lost in frames 36-72 (his recall
    over the whole clip fell from 91 to 71 %)."""
    from service.core.config import Settings

    video = "upfall/Activity6/Trial1Cam2.mp4"
    _, truth = load_truth(video)
    frames = _frames(video, 120)
    est = Settings().pose_spec().create()
    found = []
    try:
        for f in frames:
            people = est.estimate(f.rgb, f.timestamp_s)
            gt = [r.box for r in truth.get(f.index + 1, []) if r.person == 2 and r.counted]
            if gt:
                boxes = [
                    (p.box.x0 / f.scale, p.box.y0 / f.scale, p.box.x1 / f.scale, p.box.y1 / f.scale)
                    for p in people
                ]
                found.append(bool(boxes) and float(_iou_matrix(gt, boxes).max()) >= 0.5)
    finally:
        est.close()
    assert len(found) >= 110
    assert np.mean(found) >= 0.9, f"bystander in {np.mean(found):.0%} of his frames"
    # and in the stretch where the walker is closest (the old rule lost him in all of it)
    assert np.mean(found[40:70]) >= 0.9


@pytest.mark.slow
def test_probation_keeps_the_walker_who_reenters_and_the_passer_by() -> None:
    """UP-Fall Activity6/Trial1Cam1, frames 1-320: the walker leaves the view and re-enters (a new
    track each time), and a passer-by walks along the corridor behind the glass for 20 frames
    (labelled distractor 5, frames 170-189). The tracker's probation (`TrackerConfig.confirm_s`)
    must drop neither: the clip keeps a confirmed person from the first frame, the stream reports
    them from confirmation on. Measured 2026-12-03 with 0.2 s (without probation in brackets):
    walker in 214 (215) / 232 of his frames in the clip view, 216 (221) in the stream view;
    passer-by in 13 (13) / 20 and 9 (11)."""
    import itertools

    from perception.tracking.clip_tracks import TrackHistory, clip_tracks
    from perception.video import VideoReader
    from service.core.config import Settings
    from service.frames import FrameTracking, PosedFrame

    video = "upfall/Activity6/Trial1Cam1.mp4"
    _, truth = load_truth(video)
    s = Settings()
    est = s.pose_spec().create()
    stream = FrameTracking(s.min_pose_visibility, s.track_confirm_s, tentative=False)
    clip, history = FrameTracking(s.min_pose_visibility, s.track_confirm_s), TrackHistory()
    streamed: dict[int, list[tuple[float, float, float, float]]] = {}
    try:
        with VideoReader(require_data(*video.split("/")), max_side=s.pose_max_side) as reader:
            for f in itertools.islice(reader, 320):
                poses = est.estimate(f.rgb, f.timestamp_s)
                posed = PosedFrame(f.index, f.timestamp_s, f.width, f.height, poses)
                people = stream.track(posed).people
                streamed[f.index + 1] = [_source_box(p.pose.image, f.scale) for p in people]
                history.add(clip.track(posed).update)
    finally:
        est.close()
    frames = sorted(streamed)
    clipped: dict[int, list[tuple[float, float, float, float]]] = {k: [] for k in frames}
    for seq in clip_tracks(history, (f.width, f.height), s.stitch_tracks)[0].values():
        for k in np.flatnonzero(np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))):
            clipped[frames[k]].append(_source_box(seq.image[k], f.scale))

    def covered(boxes: dict[int, list[tuple[float, float, float, float]]], person: int, iou: float) -> int:
        hit = 0
        for k in frames:
            gt = [r.box for r in truth.get(k, []) if r.person == person and (r.counted or person == 5)]
            hit += bool(gt and boxes[k]) and float(_iou_matrix(gt, boxes[k]).max()) >= iou
        return hit

    assert covered(clipped, 1, 0.5) >= 205 and covered(streamed, 1, 0.5) >= 205
    # the passer-by's skeleton is partial (legs behind the bench): matched at a lower overlap
    assert covered(clipped, 5, 0.3) >= 10 and covered(streamed, 5, 0.3) >= 6


def _source_box(image: np.ndarray, scale: float) -> tuple[float, float, float, float]:
    """A skeleton's landmark box in the video's own pixels (the ground truth's)."""
    xy = np.asarray(image, np.float64)[:, :2] / scale
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


@pytest.mark.slow
def test_no_second_skeleton_on_the_actor_lying_head_to_camera() -> None:
    """UP-Fall Activity4/Trial2Cam2 (the actor falls and lies with his head towards the camera):
    from frame 113 MediaPipe draws a second skeleton over him (its box 0.58-0.87 inside the first
    one's) in most frames. The tracker keeps it tentative (`TrackerConfig.inside_confirmed`), so
    neither view reports it: measured 2026-12-03, without the rule a 20-frame phantom track in the
    clip view. The actor's own skeleton spans his upper body only (IoU < 0.5 with his head-to-feet
    box): partial frames, not a phantom (bench/tracking.py)."""
    from bench.poses import dump_clip, score_dump

    require_data("upfall", "Activity4", "Trial2Cam2.mp4")
    info = load_index()["upfall/Activity4/Trial2Cam2.mp4"]
    dump = dump_clip(info, lanes=1)
    doubled = [
        f for f, raw in zip(dump.frames, dump.raw, strict=True)
        if f >= 113 and sum(p.box.x0 < 450 * dump.scale for p in select_people(raw, 4)) >= 2
    ]  # fmt: skip
    assert len(doubled) >= 10, f"the duplicate is no longer drawn ({doubled}): the test proves nothing"
    run, s = score_dump(dump)
    assert s.phantoms == [], s.phantoms
    assert s.partial and max(s.partial.values()) >= 40  # the actor's partial skeleton
    assert s.recall_per_person[2] >= 0.9  # the seated bystander
    late = [tracks for f, tracks in zip(run.frames, run.tracks, strict=True) if f >= 113]
    on_actor = {t for tracks in late for t, b in tracks if b[0] < 450}
    assert len(on_actor) == 1, on_actor


def test_track_changes_names_the_frames_a_rule_changes_on_an_unlabelled_clip() -> None:
    """`python -m bench.poses changes`: UP-Fall Activity5/Trial1Cam1 (no ground truth) in the clip
    view. The skeleton below the lying actor (as in Trial2Cam1) confirmed for 42 frames before
    `border_cut_in_frame` (measured 2026-12-04: frames 40-81); the same tracker twice changes nothing."""
    from bench.poses import dump_clip, track_changes, video_info

    info = video_info(require_data("upfall", "Activity5", "Trial1Cam1.mp4"))
    assert info.video == "upfall/Activity5/Trial1Cam1.mp4" and info.frames > 100
    dump = dump_clip(info)
    assert track_changes(dump, {}) == []
    changed = track_changes(dump, {"border_cut_in_frame": None})
    assert len(changed) >= 20 and changed == list(range(changed[0], changed[-1] + 1))
