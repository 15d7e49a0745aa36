"""The tracking benchmark (bench/tracking.py) on real clips against the committed ground truth.

The clip view is POST /recognize's own answer (``frames=boxes``) from a real server with the
default settings. Floors are a little below what the default service measures (issue 18 part 2,
docs/tracking.md), so they catch regressions; a deliberately broken prediction must score worse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bench.groundtruth import load_truth
from bench.tracking import TrackingScore, ViewRun, clip_view, drop_ignored, score, stream_schedule
from tests.conftest import require_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    from bench.server import launch_server

    with launch_server() as handle:
        yield handle


@pytest.fixture(scope="module")
def mmaction_clip_view(server: object) -> ViewRun:
    require_data("clips", "mmaction2_demo_skeleton.mp4")
    info, _ = load_truth("clips/mmaction2_demo_skeleton.mp4")
    return clip_view(server, info)  # type: ignore[arg-type]


def test_clip_view_on_the_ntu_pair(mmaction_clip_view: ViewRun) -> None:
    """POST /recognize's people on the two people at arm's length who then embrace: measured
    2026-12-03 (issue 18 part 2) MOTA 1.0, IDF1 1.0, no switch, recall 1.0 / 1.0."""
    _, truth = load_truth("clips/mmaction2_demo_skeleton.mp4")
    s = score(mmaction_clip_view, truth)
    assert s.frames == 72 and s.gt_boxes == 144
    assert s.mota >= 0.95
    assert s.idf1 >= 0.95
    assert s.id_switches <= 1
    assert min(s.recall_per_person.values()) >= 0.95
    assert s.phantoms == []
    assert s.match_iou_median is not None and s.match_iou_median >= 0.7


def test_clip_view_finds_the_three_small_people(server: object) -> None:
    """felix_exercise.avi (three small people side by side for 39 s; before issue 18 part 2 the left
    man was found in 4 % of the frames, MOTA 0.58): POST /recognize now finds each of them in
    >= 95 % of the labelled frames (measured 2026-12-03: 100 / 98.5 / 96.7 %, MOTA 0.97, no switch)."""
    require_data("clips", "felix_exercise.avi")
    info, truth = load_truth("clips/felix_exercise.avi")
    s = score(clip_view(server, info), truth)  # type: ignore[arg-type]
    assert s.frames == 393
    assert min(s.recall_per_person.values()) >= 0.95, s.recall_per_person
    assert s.mota >= 0.93 and s.idf1 >= 0.93
    assert s.id_switches <= 1
    assert s.phantoms == []


def test_clip_view_phantoms_over_the_lifter(server: object) -> None:
    """stgcn_clean_and_jerk.mp4 (one weightlifter): before issue 18 round 3 POST /recognize returned
    phantom tracks of 50 and 20 frames (skeletons of 6-15 % of the frame's height over the barbell
    and the banner; perception.pose.person.size_floor and PoseGraph.forget remove them), then one
    of 7 frames (a garbled skeleton over the plate that flickers: the tracker's probation,
    `TrackerConfig.confirm_s`, never confirms it). Measured through the real server 2026-12-03:
    the lifter alone, 1 false positive."""
    require_data("clips", "stgcn_clean_and_jerk.mp4")
    info, truth = load_truth("clips/stgcn_clean_and_jerk.mp4")
    run = clip_view(server, info)  # type: ignore[arg-type]
    s = score(run, truth)
    assert s.frames == 300
    assert s.phantoms == []
    assert s.recall_per_person[1] >= 0.99 and s.mota >= 0.97
    assert len({t for tracks in run.tracks for t, _ in tracks}) == 1


def test_swapped_ids_score_worse(mmaction_clip_view: ViewRun) -> None:
    """The same boxes with the two tracks' ids swapped halfway: identity metrics must drop."""
    _, truth = load_truth("clips/mmaction2_demo_skeleton.mp4")
    good = score(mmaction_clip_view, truth)
    ids = sorted({t for tracks in mmaction_clip_view.tracks for t, _ in tracks})
    assert len(ids) == 2
    swap = {ids[0]: ids[1], ids[1]: ids[0]}
    broken = ViewRun(mmaction_clip_view.clip, "swapped", list(mmaction_clip_view.frames))
    for k, tracks in enumerate(mmaction_clip_view.tracks):
        broken.tracks.append([(swap[t] if k >= 36 else t, box) for t, box in tracks])
    bad = score(broken, truth)
    assert bad.id_switches >= good.id_switches + 2
    assert bad.idf1 < good.idf1 - 0.3
    assert bad.mota < good.mota
    # and a track that covers nobody for 5 frames is a phantom
    ghost = ViewRun(mmaction_clip_view.clip, "ghost", list(mmaction_clip_view.frames))
    for k, tracks in enumerate(mmaction_clip_view.tracks):
        ghost.tracks.append([*tracks, *([(99, (0.0, 0.0, 100.0, 300.0))] if 10 <= k < 15 else [])])
    assert [p["track"] for p in score(ghost, truth).phantoms] == [99]


def test_people_behind_the_glass_are_neither_misses_nor_phantoms() -> None:
    """UP-Fall Activity6/Trial1Cam1: predictions on the corridor's distractors are dropped before
    scoring (MOTChallenge devkit), so the ground truth itself scores perfectly."""
    info, truth = load_truth("upfall/Activity6/Trial1Cam1.mp4")
    assert info.distractors
    run = ViewRun(info.video, "truth")
    for frame in range(1, info.frames + 1):
        run.add(frame, [(r.person, r.box) for r in truth.get(frame, [])], 0.0)
    s = score(run, truth)
    assert (s.mota, s.idf1, s.false_positives, s.misses, s.phantoms) == (1.0, 1.0, 0, 0, [])
    rows = [r for rows in truth.values() for r in rows if not r.counted and r.person in info.distractors]
    assert drop_ignored([rows[0]], [(7, rows[0].box)], 0.5) == []


def test_a_lone_partial_skeleton_is_no_phantom_but_a_second_one_is() -> None:
    """A track whose unmatched box lies inside a labelled person nobody else covers is that person,
    partly seen (`partial`: the actor lying head-to-camera); a second skeleton on a person already
    tracked, or the shorter of two partial ones, is a phantom (a body inside another body). Both
    still count as a miss and a false positive in MOTA."""
    from bench.groundtruth import TruthBox

    body, upper = (100.0, 0.0, 200.0, 300.0), (110.0, 0.0, 190.0, 120.0)  # IoU 0.32
    truth = {f: [TruthBox(f, 1, body, 1, 1, 1.0)] for f in range(1, 21)}

    def run(tracks_of: Callable[[int], list[tuple[int, tuple[float, float, float, float]]]]) -> TrackingScore:
        r = ViewRun("x.mp4", "clip")
        for f in range(1, 21):
            r.add(f, tracks_of(f), 0.0)
        return score(r, truth)

    lone = run(lambda f: [(1, upper)])
    assert (lone.misses, lone.false_positives, lone.phantoms, lone.partial) == (20, 20, [], {1: 20})
    tracked = run(lambda f: [(1, body), *([(2, upper)] if f > 5 else [])])
    assert [p["track"] for p in tracked.phantoms] == [2] and tracked.partial == {}
    two = run(lambda f: [(1, upper), *([(2, upper)] if f > 10 else [])])
    assert two.partial == {1: 20} and [p["track"] for p in two.phantoms] == [2]
    # outside the person: a phantom as before
    away = run(lambda f: [(1, body), (3, (400.0, 0.0, 480.0, 120.0))])
    assert [p["track"] for p in away.phantoms] == [3]


def test_stream_schedule_plays_in_real_time() -> None:
    assert stream_schedule(18, 18.0, 10.0) == [0, 2, 4, 5, 7, 9, 11, 13, 14, 16]
    assert stream_schedule(10, 10.0, 15.0)[:4] == [0, 1, 1, 2]  # a faster camera repeats frames


def test_stream_view_through_a_real_server(server: object) -> None:
    """WS /stream at 10 fps on the tai chi clip (one person): every reply is scored, the person is
    found in the answered frames. Drops depend on the machine's load, so they are not asserted."""
    from bench.clips import jpeg_frames
    from bench.tracking import stream_view

    require_data("clips", "stgcn_ta_chi.mp4")
    info, truth = load_truth("clips/stgcn_ta_chi.mp4")
    run = stream_view(server, info, 10.0, jpeg_frames(info.video_path, info.frames), drain_s=30.0)  # type: ignore[arg-type]
    assert run.sent == 101 and run.errors == []
    assert 1 <= len(run.frames) <= run.sent
    assert all(1 <= f <= info.frames for f in run.frames)
    s = score(run, truth)
    assert s.frames == len(run.frames)
    assert s.recall_per_person[1] >= 0.8


def test_stream_view_finds_the_three_small_people(server: object) -> None:
    """felix_exercise.avi over WS /stream at 10 fps (before issue 18 part 2: the left man in 4 % of
    the replies, the right man never): each person in >= 90 % of the frames, at most one identity
    switch, no phantom. Each frame is sent once the previous one is answered, with its capture
    time, so none is dropped and the server's clock is the clip's whatever the load (measured
    2026-12-03 at load 16-19: 96.7 / 98.2 / 95.9 %, MOTA 0.954, IDF1 0.977, no switch)."""
    from bench.clips import jpeg_frames
    from bench.tracking import stream_view

    require_data("clips", "felix_exercise.avi")
    info, truth = load_truth("clips/felix_exercise.avi")
    jpegs = jpeg_frames(info.video_path, info.frames)
    run = stream_view(server, info, 10.0, jpegs, wait_replies=True)  # type: ignore[arg-type]
    assert run.errors == [] and len(run.frames) == run.sent == 393
    s = score(run, truth)
    assert min(s.recall_per_person.values()) >= 0.9, s.recall_per_person
    assert s.id_switches <= 1 and s.idf1 >= 0.9
    assert s.phantoms == []


def test_stream_view_reports_the_embracing_pair_after_probation(server: object) -> None:
    """mmaction2_demo_skeleton.mp4 (2.6 s, both people in view from the first frame) over WS
    /stream at 10 fps, none dropped: a stream reports a track only once it has passed its
    probation (`TrackerConfig.confirm_s`, 0.2 s: the 3rd frame at 10 fps), so each person misses
    the first 2 of 26 frames. Issue 18 asks >= 90 % per person; measured on saved poses
    (bench.poses dump --rate 10) 2026-12-03: 92.3 / 92.3 %, no switch, no phantom."""
    from bench.clips import jpeg_frames
    from bench.tracking import stream_view

    require_data("clips", "mmaction2_demo_skeleton.mp4")
    info, truth = load_truth("clips/mmaction2_demo_skeleton.mp4")
    jpegs = jpeg_frames(info.video_path, info.frames)
    run = stream_view(server, info, 10.0, jpegs, wait_replies=True)  # type: ignore[arg-type]
    assert run.errors == [] and len(run.frames) == run.sent == 26
    assert run.tracks[0] == [] and run.tracks[1] == []  # on probation: not reported yet
    s = score(run, truth)
    assert min(s.recall_per_person.values()) >= 0.9, s.recall_per_person
    assert s.id_switches == 0 and s.phantoms == []
