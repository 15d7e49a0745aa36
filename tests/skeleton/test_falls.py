"""Confirmed fall events (skeleton.falls) on real UP-Fall skeletons classified by the shipped model:
a fall clip gives one fall and nothing before it, daily activities give nothing (even when the model
is made to see a fall in every window), a fall followed by real upright windows gives ``recovered``,
and a stream fed window by window gets the events of the whole clip."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.falls import FallMonitor, FallRule, FallWindow, Posture, detect_falls, frame_postures
from skeleton.manifest import FallRuleSpec, ModelManifest, load_manifest
from skeleton.paths import REPO_ROOT
from tests.model_helpers import require_cache

pytestmark = pytest.mark.skeleton_cache

MODEL_DIR = REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite"
FALLS = (
    *(f"Activity{a}/Trial2Cam1" for a in (1, 2, 3, 4, 5)),
    "Activity1/Trial1Cam1",
    "Activity3/Trial1Cam1",
)
DAILY = tuple(f"Activity{a}/Trial2Cam1" for a in (6, 9, 10, 11))  # walking, picking up, jumping, laying


class Model:
    """The shipped UP-Fall model on ONNX Runtime, and recordings of cached clips classified by it."""

    def __init__(self) -> None:
        import onnxruntime as ort

        self.manifest: ModelManifest = load_manifest(MODEL_DIR)
        self.session = ort.InferenceSession(
            str(MODEL_DIR / self.manifest.onnx.file), providers=["CPUExecutionProvider"]
        )
        self.rule = FallRule.from_manifest(self.manifest)
        self._cache: dict[str, object] = {}

    def classify(self, x: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.manifest.onnx.input_name: x})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def recording(self, name: str):  # type: ignore[no-untyped-def]
        from training.falls import clip_recording
        from training.skeleton_cache import load_clip

        if name not in self._cache:
            clip = load_clip(require_cache(f"{name}.npz"))
            self._cache[name] = clip_recording(
                name, clip, self.manifest.input, self.classify, self.rule.spec.posture_s
            )
        return self._cache[name]


@pytest.fixture(scope="module")
def model() -> Model:
    return Model()


def test_shipped_rule_is_the_manifests(model: Model) -> None:
    assert model.rule.fall_classes == (0, 1, 2, 3, 4)
    assert model.rule.spec == model.manifest.fall_rule
    stricter = FallRule.from_manifest(model.manifest, confirm_s=5.0, expire_s=9.0)
    assert stricter.spec.confirm_s == 5.0 and stricter.spec.down_angle == model.rule.spec.down_angle
    with pytest.raises(ValueError):
        FallRule.from_manifest(model.manifest, confirm_s=-1.0)
    # per window, the fall pattern is the fall classes summed at the threshold, as fall_probability
    probs = np.zeros((3, len(model.manifest.labels)))
    probs[0, 0], probs[0, 5] = 0.3, 0.7  # 0.3 on falls
    probs[1, 0], probs[1, 2] = 0.3, 0.3  # 0.6
    probs[2, 4] = probs[2, 5] = 0.5  # exactly the threshold (0.5)
    assert model.rule.spec.fall_threshold == 0.5
    assert list(model.rule.shows_fall(probs)) == [False, True, True]
    assert [model.rule.fall_probability(p) >= 0.5 for p in probs] == [False, True, True]
    assert not FallRule().shows_fall(probs).any()  # no fall classes


@pytest.mark.parametrize("name", FALLS)
def test_fall_clip_raises_one_fall_after_the_person_is_down(model: Model, name: str) -> None:
    rec = model.recording(name)
    spec = model.rule.spec
    events = detect_falls(rec.tracks, model.rule)
    assert [e.kind for e in events] == ["fall"], events
    e = events[0]
    # nothing before the fall, and the fall only once the person has been seen down long enough
    assert e.time >= rec.fall_time + spec.confirm_s - spec.posture_s
    assert abs(e.fall_time - rec.fall_time) < 1.0
    assert e.confidence >= spec.fall_threshold and e.label in model.rule.fall_classes
    assert e.down_s >= spec.confirm_s
    assert e.fall_windows and min(e.fall_windows) >= rec.fall_time  # windows that contain the fall
    assert model.rule.is_down(e.after, e.before) and not model.rule.is_down(e.before, None)


def test_a_fall_that_breaks_the_track_is_confirmed_on_the_track_that_lies(model: Model) -> None:
    """Activity5/Trial2Cam1's actor as an older extraction tracked them: their track ends at the
    frame's bottom edge ~1.9 s after the fall and another track shows them lying from 1 s after the
    fall on (today's tracker keeps one track; the break is cut from its real windows)."""
    rec = model.recording("Activity5/Trial2Cam1")
    ws = rec.tracks[rec.primary]
    actor = [w for w in ws if w.end <= rec.fall_time + 1.9]
    lying = [w for w in ws if w.start >= rec.fall_time + 1.0]
    assert actor and lying
    (event,) = detect_falls({1: actor, 2: lying}, model.rule)
    assert event.kind == "fall" and event.handed_over_from == 1 and event.track_id == 2
    assert detect_falls({1: actor}, model.rule) == []  # the actor's own track is not seen down long enough
    (whole,) = detect_falls(rec.tracks, model.rule)  # unbroken, the actor's own track raises it
    assert whole.track_id == rec.primary and whole.handed_over_from is None


@pytest.mark.parametrize("name", DAILY)
def test_daily_activities_raise_nothing(model: Model, name: str) -> None:
    assert detect_falls(model.recording(name).tracks, model.rule) == []


@pytest.mark.parametrize("name", DAILY)
def test_posture_keeps_people_who_are_not_down_from_falling(model: Model, name: str) -> None:
    """The same clips with the model made to see a fall in every window: walking in and out of the
    frame, bending, jumping and lying (already down: no standing baseline) still raise nothing."""
    rec = model.recording(name)
    certain = np.zeros(len(model.manifest.labels))
    certain[0] = 1.0
    tracks = {tid: [_with_probs(w, certain) for w in ws] for tid, ws in rec.tracks.items()}
    assert detect_falls(tracks, model.rule) == []
    if name == "Activity6/Trial2Cam1":  # the walker is cut by the frame's border in some windows
        seen = [w.after.seen for w in rec.tracks[rec.primary]]
        assert min(seen) < 0.5


def test_fall_then_getting_up_gives_recovered(model: Model) -> None:
    """Real windows: a fall clip's actor, then the same camera's jumping actor from the next
    window on (the person is up again), as one track."""
    fall = model.recording("Activity1/Trial2Cam1")
    up = model.recording("Activity10/Trial2Cam1")
    ws, up_ws = fall.tracks[fall.primary], up.tracks[up.primary]
    offset = ws[-1].end + 0.25 - up_ws[0].end  # the next window (a hop later) is the jumping actor's first
    joined = [*ws, *(_shifted(w, offset) for w in up_ws)]
    events = detect_falls({7: joined}, model.rule)
    assert [e.kind for e in events] == ["fall", "recovered"]
    fallen, recovered = events
    assert recovered.fall_time == fallen.fall_time and recovered.track_id == 7
    assert recovered.time >= ws[-1].end + model.rule.spec.recover_s
    assert not model.rule.is_down(recovered.after, recovered.before)


def test_stream_fed_window_by_window_equals_the_whole_clip(model: Model) -> None:
    """Windows arriving one at a time (tracks interleaved, finished tracks ended and forgotten
    as a stream does) give the events of ``detect_falls`` on the whole clip."""
    for name in ("Activity5/Trial2Cam1", "Activity2/Trial2Cam1", "Activity6/Trial2Cam1"):
        rec = model.recording(name)
        whole = detect_falls(rec.tracks, model.rule)
        monitor = FallMonitor(model.rule)
        arrivals = sorted((w.end, tid, i) for tid, ws in rec.tracks.items() for i, w in enumerate(ws))
        streamed = []
        for end, tid, i in arrivals:
            streamed += monitor.update(tid, rec.tracks[tid][i])
            if i == len(rec.tracks[tid]) - 1:
                monitor.end_track(tid)
            monitor.forget(before=end - 30.0)
        assert streamed == whole, name


def test_posture_only_counts_joints_seen_inside_the_frame(model: Model) -> None:
    """A real standing pose slid down until its hips leave the frame: the torso is no longer
    measurable (not 'down'), and a passer-by seen for two frames never gets a baseline."""
    from training.skeleton_cache import load_clip

    clip = load_clip(require_cache("Activity9/Trial2Cam1.npz"))
    seq = clip.primary_track
    assert seq is not None
    pose, vis = seq.image[:1].copy(), seq.visibility[:1].copy()
    inside = frame_postures(np.zeros(1), pose, vis, clip.width, clip.height)
    assert inside.torso_angle[0] < 20 and inside.seen[0] > 0.8
    hips_y = pose[0, [23, 24], 1].mean()
    slid = pose.copy()
    slid[..., 1] += clip.height - hips_y + 5  # hips just below the bottom edge
    cut = frame_postures(np.zeros(1), slid, vis, clip.width, clip.height)
    assert np.isnan(cut.torso_angle[0]) and cut.seen[0] < inside.seen[0]
    rule = FallRule((0,), FallRuleSpec())
    assert not rule.is_down(cut.span(0, 0), None)
    # two frames of a passer-by: no posture over a window's first half second -> no candidate
    t = np.array([10.0, 10.06])
    post = frame_postures(t, np.repeat(pose, 2, axis=0), np.repeat(vis, 2, axis=0), clip.width, clip.height)
    from skeleton.falls import fall_window

    w = fall_window(post, 10.06 - 1.94, 10.06, np.eye(11)[0], rule.spec.posture_s)
    monitor = FallMonitor(rule)
    assert monitor.update(1, w) == [] and monitor.state(1) == "none"


def _with_probs(w: FallWindow, probs: np.ndarray) -> FallWindow:
    from dataclasses import replace

    return replace(w, probs=probs)


def _shifted(w: FallWindow, dt: float) -> FallWindow:
    from training.falls import shifted

    return shifted(w, dt)


def test_a_fallen_person_found_again_on_a_new_track_recovers_there(model: Model) -> None:
    """The faller's track ends while they lie (lost by the tracker); a new track picks them up, still
    down, right after: it takes the fall over and reports the recovery when they get up (the
    jumping actor's real windows). A person upright on the new track takes nothing over."""
    fall = model.recording("Activity1/Trial2Cam1")
    up = model.recording("Activity10/Trial2Cam1")
    ws, up_ws = fall.tracks[fall.primary], up.tracks[up.primary]
    first = detect_falls({7: ws}, model.rule)[0]
    cut = next(i for i, w in enumerate(ws) if w.end > first.time + 0.5)  # lost 0.5 s after the alarm
    lost_end = ws[cut - 1].end
    found = [w for w in ws[cut:] if w.start > lost_end]  # the new track's own windows, still lying
    assert found and found[0].start - lost_end <= model.rule.spec.handover_s
    offset = ws[-1].end + 0.25 - up_ws[0].end
    getting_up = [*found, *(_shifted(w, offset) for w in up_ws)]
    monitor = FallMonitor(model.rule)
    events = []
    for w in ws[:cut]:
        events += monitor.update(7, w)
    monitor.end_track(7)
    for w in getting_up:
        events += monitor.update(8, w)
    assert [(e.kind, e.track_id) for e in events] == [("fall", 7), ("recovered", 8)], events
    assert events[1].fall_time == events[0].fall_time and events[1].handed_over_from == 7
    # someone standing where the fallen person's track ended takes no fall over
    monitor = FallMonitor(model.rule)
    for w in ws[:cut]:
        monitor.update(7, w)
    monitor.end_track(7)
    at = found[0].before  # ... even right where the fallen person lies
    standing = [_moved(_shifted(w, lost_end + 0.25 - up_ws[0].start), at) for w in up_ws]
    assert [e for w in standing for e in monitor.update(8, w)] == []


def _moved(w: FallWindow, to: Posture) -> FallWindow:
    """The window with its postures centred on ``to``'s centre."""
    from dataclasses import replace

    def move(p: Posture) -> Posture:
        return replace(p, centre_x=to.centre_x, centre_y=to.centre_y)

    return replace(w, before=move(w.before), after=move(w.after))


def test_a_candidate_lost_while_down_is_confirmed_on_the_track_that_finds_them(model: Model) -> None:
    """The faller's track ends while they lie but before the fall is confirmed (the tracker loses
    the fallen shape); a new track picks them up, still down, right after: the fall is raised on
    it, from the same fall, and the tracker's gap does not restart the time down."""
    fall = model.recording("Activity1/Trial2Cam1")
    ws = fall.tracks[fall.primary]
    whole = detect_falls({7: ws}, model.rule)[0]
    cut = next(i for i, w in enumerate(ws) if w.end > whole.time - 0.3)  # lost just before confirming
    lost_end = ws[cut - 1].end
    found = [w for w in ws[cut:] if w.start > lost_end]
    assert found and found[0].start - lost_end <= model.rule.spec.handover_s
    monitor = FallMonitor(model.rule)
    events = [e for w in ws[:cut] for e in monitor.update(7, w)]
    assert events == [] and monitor.state(7) == "candidate"
    monitor.end_track(7)
    events = [e for w in found for e in monitor.update(8, w)]
    assert [(e.kind, e.track_id, e.handed_over_from) for e in events[:1]] == [("fall", 8, 7)], events
    assert events[0].fall_time == whole.fall_time
    assert events[0].time == found[0].end  # down since before the gap: confirmed on its first window
