"""Confirmed fall events (numpy only): a fall is raised when the fall pattern is followed by the
person being down, and a ``recovered`` event when they are up again.

One window's fall probability is not evidence enough (a passer-by or a stumble can reach it), so
fall detectors in the literature and in products confirm a fall by what follows it. Here:

1. **Candidate**: a window whose summed fall-class probability is >= ``fall_threshold`` while the
   posture at the window's start (the *baseline*) is measurable and not already down.
2. **Confirmation**: the person is then seen *down* -- torso at least ``down_angle`` from upright,
   or shoulders at least ``down_drop`` baseline torso lengths below the baseline -- in consecutive
   windows spanning ``confirm_s`` seconds: a ``fall`` event, dated at the fall itself.
   Seen *up* (neither) for ``recover_s`` first, or not confirmed within ``expire_s``: no event.
3. **Recovery**: after a fall, seen up for ``recover_s``: a ``recovered`` event.

Posture comes from the MediaPipe-33 *image* landmarks seen inside the frame (visibility and a
margin from the border): a person cut by the frame (entering, leaving, behind a glass wall) has
no measurable posture there, and an unmeasurable posture neither confirms nor cancels anything;
a track too short to show a standing baseline never starts a candidate.

Falls break tracks (fast motion, the body half out of view). A track that is first seen already
down, close to where a candidate or fallen track was, within ``handover_s`` of its fall, watches
that fall too (``FallEvent.handed_over_from``): whichever track shows the person down long enough
raises the fall, once, and the recovery is reported on whichever sees them up.

``FallMonitor`` holds the state of every track of one stream; a stream feeds windows as they come,
a clip feeds them all in the same order (``detect_falls``): the same calls give the same events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from skeleton.manifest import FallRuleSpec

if TYPE_CHECKING:
    from skeleton.manifest import ModelManifest
    from skeleton.types import SkeletonSequence

NAN = float("nan")
SHOULDERS = (11, 12)
HIPS = (23, 24)
# Joints whose presence inside the frame says how much of the body is seen.
CORE_JOINTS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# Frames of a height smoothed before differentiating (the fall's moment of fastest descent).
SMOOTH_FRAMES = 5


@dataclass(frozen=True, slots=True)
class Posture:
    """Body posture over a short span (medians over its frames; NaN: not measurable there).

    torso_angle: degrees between the hip->shoulder line and the image's up direction (0 upright,
    90 horizontal, 180 head down). torso_length, shoulder_y, centre_x, centre_y: in frame
    heights, y downwards from the top (centre: mid-point of the shoulder and hip centres seen).
    seen: mean fraction of the core joints seen inside the frame.
    """

    torso_angle: float = NAN
    torso_length: float = NAN
    shoulder_y: float = NAN
    centre_x: float = NAN
    centre_y: float = NAN
    seen: float = 0.0

    @property
    def measurable(self) -> bool:
        return math.isfinite(self.shoulder_y) or math.isfinite(self.torso_angle)

    def drop_from(self, before: Posture) -> float:
        """How far the shoulders went down since ``before``, in ``before``'s torso lengths."""
        if not before.torso_length > 0:
            return NAN
        return (self.shoulder_y - before.shoulder_y) / before.torso_length

    def distance_to(self, other: Posture) -> float:
        """Distance between the two body centres, in frame heights (NaN when one is unknown)."""
        return math.hypot(self.centre_x - other.centre_x, self.centre_y - other.centre_y)


@dataclass(frozen=True, slots=True)
class FramePostures:
    """Per-frame posture measures of one track (arrays of shape (T,)), from ``frame_postures``."""

    timestamps: np.ndarray
    torso_angle: np.ndarray
    torso_length: np.ndarray
    shoulder_y: np.ndarray
    centre_x: np.ndarray
    centre_y: np.ndarray
    seen: np.ndarray

    def span(self, start: float, end: float) -> Posture:
        """Medians over the frames with ``start <= t <= end`` (a frame not seen counts as 0 seen)."""
        sel = (self.timestamps >= start - 1e-6) & (self.timestamps <= end + 1e-6)
        if not sel.any():
            return Posture()
        return Posture(_median(self.torso_angle[sel]), _median(self.torso_length[sel]),
                       _median(self.shoulder_y[sel]), _median(self.centre_x[sel]),
                       _median(self.centre_y[sel]), float(self.seen[sel].mean()))

    def descent_time(self, start: float, end: float) -> float | None:
        """Time of the fastest downward motion of the shoulders within [start, end] (None: unseen)."""
        t = self.timestamps
        sel = (t >= start - 1e-6) & (t <= end + 1e-6) & np.isfinite(self.shoulder_y)
        return fastest_descent(t[sel], self.shoulder_y[sel])


def fastest_descent(t: np.ndarray, y_down: np.ndarray) -> float | None:
    """When a height (``y_down``: larger is lower) fell fastest, after a short moving average
    (jitter out, a ~0.5 s fall kept); None with too few samples."""
    if len(t) < SMOOTH_FRAMES + 2:
        return None
    kernel = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
    smooth = np.convolve(np.pad(y_down, SMOOTH_FRAMES // 2, mode="edge"), kernel, mode="valid")
    return float(t[int(np.gradient(smooth, t).argmax())])


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else NAN


def frame_postures(timestamps: np.ndarray, image: np.ndarray, visibility: np.ndarray, width: float,
                   height: float, min_visibility: float = 0.5, margin: float = 0.01) -> FramePostures:
    """Posture measures of every frame from (T, 33, >=2) pixel landmarks and (T, 33) visibility.

    A landmark counts when its visibility is >= ``min_visibility`` and it lies at least ``margin``
    (a fraction of the frame's side) inside the frame: MediaPipe guesses the joints it cannot see,
    and a guess must not make a person cut by the border look down.
    """
    xy = np.asarray(image, np.float64)[..., :2]
    vis = np.nan_to_num(np.asarray(visibility, np.float64))
    mx, my = margin * width, margin * height
    with np.errstate(invalid="ignore"):
        ok = (np.isfinite(xy).all(axis=-1) & (vis >= min_visibility)
              & (xy[..., 0] >= mx) & (xy[..., 0] <= width - mx)
              & (xy[..., 1] >= my) & (xy[..., 1] <= height - my))
    shoulder, hip = _pair_centre(xy, ok, SHOULDERS), _pair_centre(xy, ok, HIPS)
    v = shoulder - hip
    with np.errstate(invalid="ignore"):
        one = np.where(np.isfinite(shoulder), shoulder, hip)
        centre = np.where(np.isfinite(v), (shoulder + hip) / 2, one)
    return FramePostures(
        timestamps=np.asarray(timestamps, np.float64),
        torso_angle=np.degrees(np.arctan2(np.abs(v[:, 0]), -v[:, 1])),
        torso_length=np.hypot(v[:, 0], v[:, 1]) / height,
        shoulder_y=shoulder[:, 1] / height,
        centre_x=centre[:, 0] / height,
        centre_y=centre[:, 1] / height,
        seen=ok[:, list(CORE_JOINTS)].mean(axis=1),
    )


def _pair_centre(xy: np.ndarray, ok: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """(T, 2) mean of the joints of ``pair`` that are seen (NaN when neither is)."""
    pts = np.where(ok[:, list(pair), None], xy[:, list(pair)], 0.0)
    n = ok[:, list(pair)].sum(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, pts.sum(axis=1) / np.maximum(n, 1), np.nan)


@dataclass(frozen=True, slots=True)
class FallWindow:
    """What the rule needs of one classified window: its span, class probabilities, the posture
    over its first and last ``posture_s`` seconds and when the shoulders dropped fastest in it."""

    start: float
    end: float
    probs: np.ndarray
    before: Posture
    after: Posture
    descent_time: float | None = None


def fall_window(postures: FramePostures, start: float, end: float, probs: np.ndarray,
                posture_s: float) -> FallWindow:
    """The evidence of the window [start, end] of a track whose frame postures are ``postures``
    (``posture_s``: the rule's ``spec.posture_s``)."""
    return FallWindow(float(start), float(end), np.asarray(probs, np.float64),
                      postures.span(start, start + posture_s), postures.span(end - posture_s, end),
                      postures.descent_time(start, end))


def track_windows(postures: FramePostures, ends: np.ndarray, probs: np.ndarray, window_seconds: float,
                  posture_s: float) -> list[FallWindow]:
    """``fall_window`` for every window (ends (W,), probabilities (W, K)) of one track."""
    return [fall_window(postures, float(e) - window_seconds, float(e), p, posture_s)
            for e, p in zip(ends, probs, strict=True)]


@dataclass(frozen=True)
class FallRule:
    """Which classes are falls, and the rule's parameters (``skeleton.manifest.FallRuleSpec``)."""

    fall_classes: tuple[int, ...] = ()
    spec: FallRuleSpec = field(default_factory=FallRuleSpec)

    def __post_init__(self) -> None:
        if self.spec.expire_s < self.spec.confirm_s:
            raise ValueError("expire_s must not be shorter than confirm_s")

    @classmethod
    def from_labels(cls, labels: Sequence[str], fall_labels: Sequence[str],
                    spec: FallRuleSpec | None = None) -> FallRule:
        missing = [f for f in fall_labels if f not in labels]
        if missing:
            raise ValueError(f"fall labels {missing} are not model labels")
        return cls(tuple(list(labels).index(f) for f in fall_labels), spec or FallRuleSpec())

    @classmethod
    def from_manifest(cls, manifest: ModelManifest, **overrides: float) -> FallRule:
        """The manifest's rule, optionally with per-request / per-stream parameter ``overrides``."""
        spec = manifest.fall_rule.model_copy(update=overrides) if overrides else manifest.fall_rule
        spec = FallRuleSpec.model_validate(spec.model_dump())  # validates the overrides
        return cls.from_labels(manifest.labels, manifest.label_groups.get(spec.fall_group, []), spec)

    def fall_probability(self, probs: np.ndarray) -> float:
        return float(np.asarray(probs)[list(self.fall_classes)].sum()) if self.fall_classes else 0.0

    def shows_fall(self, probs: np.ndarray) -> np.ndarray:
        """(N,) bool for (N, K) window probabilities: the fall pattern (fall classes summed at or above
        ``fall_threshold``); all False without fall classes."""
        return np.asarray(probs)[:, list(self.fall_classes)].sum(axis=1) >= self.spec.fall_threshold

    def is_down(self, p: Posture, baseline: Posture | None) -> bool:
        """Seen down: torso far from upright, or shoulders far below the standing baseline."""
        if p.torso_angle >= self.spec.down_angle:
            return True
        return baseline is not None and p.drop_from(baseline) >= self.spec.down_drop

    def is_up(self, p: Posture, baseline: Posture | None) -> bool:
        """Seen up: torso measured and near upright, shoulders not far below the baseline."""
        if not p.torso_angle < self.spec.down_angle:
            return False
        drop = p.drop_from(baseline) if baseline is not None else NAN
        return not drop >= self.spec.down_drop


@dataclass(frozen=True, slots=True)
class FallEvent:
    """A confirmed fall or a recovery.

    time: when the event was raised (the end of the window that decided it, stream seconds).
    fall_time: the estimated moment of the fall (fastest shoulder descent in the fall windows, or
    the middle of the first one). confidence: the highest window fall probability of the fall.
    label: the most likely fall class over the fall windows. fall_windows: end times of the windows
    showing the fall pattern. before / after: the posture before the fall and when the event was
    decided. down_s: how long the person had been seen down. handed_over_from: the track whose
    fall pattern this track's posture confirmed (a fall that broke the track), else None.
    """

    kind: Literal["fall", "recovered"]
    track_id: int
    time: float
    fall_time: float
    confidence: float
    label: int
    fall_windows: tuple[float, ...]
    before: Posture
    after: Posture
    down_s: float
    handed_over_from: int | None = None


@dataclass
class _Fall:
    """One track's view of a fall in progress (candidate, then confirmed): everything its events
    report. Tracks holding a fall of the same ``group`` watch the same person's fall."""

    group: int
    baseline: Posture
    first_end: float
    windows: list[FallWindow] = field(default_factory=list)
    down_since: float | None = None
    up_since: float | None = None
    confirmed_at: float | None = None
    handed_over_from: int | None = None
    last_seen: Posture = field(default_factory=Posture)


@dataclass
class _Track:
    first_start: float | None = None
    last_end: float = -math.inf
    fall: _Fall | None = None
    ended: bool = False


class FallMonitor:
    """Fall state of every track of one stream (or clip). Feed windows in time order."""

    def __init__(self, rule: FallRule) -> None:
        self.rule = rule
        self._tracks: dict[int, _Track] = {}
        self._groups = 0

    def update(self, track_id: int, window: FallWindow) -> list[FallEvent]:
        """Feed one classified window of ``track_id``; returns the events it decided."""
        track = self._tracks.setdefault(track_id, _Track())
        first = track.first_start is None
        if first:
            track.first_start = window.start
        track.last_end = window.end
        if track.fall is None and first:
            self._adopt(track_id, track, window)
        if track.fall is None:
            self._maybe_start(track, window)
            if track.fall is None:
                return []
        return self._advance(track_id, track, window)

    def end_track(self, track_id: int) -> None:
        """The track is gone (its fall stays visible to a new track for the handover)."""
        track = self._tracks.get(track_id)
        if track is not None:
            track.ended = True

    def forget(self, before: float) -> None:
        """Drop ended tracks whose last window ended before ``before`` (bounded memory in streams)."""
        for tid in [t for t, tr in self._tracks.items() if tr.ended and tr.last_end < before]:
            del self._tracks[tid]

    def state(self, track_id: int) -> Literal["none", "candidate", "fallen"]:
        track = self._tracks.get(track_id)
        if track is None or track.fall is None:
            return "none"
        return "candidate" if track.fall.confirmed_at is None else "fallen"

    # --------------------------------------------------------------------------------- internals

    def _maybe_start(self, track: _Track, w: FallWindow) -> None:
        r, c = self.rule, self.rule.spec
        if r.fall_probability(w.probs) < c.fall_threshold:
            return
        base = w.before
        if not (base.torso_length > 0 and math.isfinite(base.shoulder_y)) or r.is_down(base, None):
            return  # no standing baseline: entering, cut by the border, or already down
        self._groups += 1
        track.fall = _Fall(self._groups, base, w.end)

    def _adopt(self, track_id: int, track: _Track, w: FallWindow) -> None:
        """A new track first seen down near another track's fall watches that fall too: whichever
        track shows the person down long enough raises the fall, once, and the recovery is
        reported by whichever sees them up. Near a fall in progress, within ``handover_s`` of the
        fall (a fall that broke its track, or a second detection of the fallen person); near a
        person already down (fallen, or a candidate seen down) whose track ended less than
        ``handover_s`` before it started (lost and found again, still down by their own standing
        baseline: someone upright beside them never takes their fall over). A candidate lost while
        down keeps its time down: the tracker's gap does not restart the confirmation."""
        r, c = self.rule, self.rule.spec
        best: tuple[float, int, bool] | None = None
        for tid, other in self._tracks.items():
            fall = other.fall
            if tid == track_id or fall is None or fall.handed_over_from == track_id:
                continue
            t_fall = _fall_time(fall)
            falling = r.is_down(w.before, None) and t_fall - c.posture_s <= w.start <= t_fall + c.handover_s
            was_down = fall.confirmed_at is not None or fall.down_since is not None
            lost = (was_down and other.ended and w.start - other.last_end <= c.handover_s
                    and r.is_down(w.before, fall.baseline))
            if not (falling or lost):
                continue
            d = w.before.distance_to(fall.last_seen) / fall.baseline.torso_length
            if d <= c.handover_distance and (best is None or d < best[0]):
                best = (d, tid, lost)
        if best is None:
            return
        source = self._tracks[best[1]].fall
        assert source is not None
        # lost while down and found still down: the time down goes on across the short gap
        down_since = source.down_since if best[2] and source.confirmed_at is None else None
        track.fall = replace(source, handed_over_from=best[1], down_since=down_since, up_since=None,
                             windows=list(source.windows))

    def _advance(self, track_id: int, track: _Track, w: FallWindow) -> list[FallEvent]:
        r, c = self.rule, self.rule.spec
        fall = track.fall
        assert fall is not None
        if fall.confirmed_at is None and r.fall_probability(w.probs) >= c.fall_threshold:
            fall.windows.append(w)
        if w.after.measurable:
            fall.last_seen = w.after
        if r.is_down(w.after, fall.baseline):
            fall.up_since = None
            if fall.down_since is None:
                fall.down_since = w.end
        elif r.is_up(w.after, fall.baseline):
            fall.down_since = None
            if fall.up_since is None:
                fall.up_since = w.end
        # else: not measurable now -- neither confirms nor cancels
        up = fall.up_since is not None and w.end - fall.up_since >= c.recover_s
        if fall.confirmed_at is None:
            if fall.down_since is not None and w.end - fall.down_since >= c.confirm_s:
                fall.confirmed_at = w.end
                self._drop(fall.group, keep=track_id)
                return [self._event("fall", track_id, fall, w)]
            if up:  # the person is up again before the fall was confirmed: no fall
                self._drop(fall.group)
            elif w.end - fall.first_end > c.expire_s:
                track.fall = None
            return []
        if up:
            self._drop(fall.group)
            return [self._event("recovered", track_id, fall, w)]
        return []

    def _drop(self, group: int, keep: int | None = None) -> None:
        """Forget the fall ``group`` on every track but ``keep``."""
        for tid, tr in self._tracks.items():
            if tid != keep and tr.fall is not None and tr.fall.group == group:
                tr.fall = None

    def _event(self, kind: Literal["fall", "recovered"], track_id: int, fall: _Fall,
               w: FallWindow) -> FallEvent:
        r = self.rule
        probs = np.stack([x.probs for x in fall.windows]) if fall.windows else w.probs[None]
        classes = list(r.fall_classes)
        mean = probs[:, classes].mean(axis=0) if classes else np.zeros(1)
        since = fall.down_since if kind == "fall" else fall.confirmed_at
        return FallEvent(
            kind=kind, track_id=track_id, time=w.end, fall_time=round(_fall_time(fall), 4),
            confidence=round(max((r.fall_probability(x.probs) for x in fall.windows), default=0.0), 4),
            label=classes[int(mean.argmax())] if classes else -1,
            fall_windows=tuple(x.end for x in fall.windows), before=fall.baseline, after=w.after,
            down_s=round(w.end - (since if since is not None else w.end), 4),
            handed_over_from=fall.handed_over_from,
        )


def _fall_time(fall: _Fall) -> float:
    """The moment of the fall: the median fastest-descent time of the fall windows (the middle of
    the first window when the shoulders were not seen dropping)."""
    times = [w.descent_time for w in fall.windows if w.descent_time is not None]
    if times:
        return float(np.median(times))
    if fall.windows:
        w = fall.windows[0]
        return (w.start + w.end) / 2
    return fall.first_end


def clip_events(
    rule: FallRule,
    people: Iterable[tuple[int, SkeletonSequence, np.ndarray, np.ndarray]],
    window_seconds: float,
    width: float,
    height: float,
) -> list[FallEvent]:
    """The events of a whole clip from its people: ``(track id, landmarks over the clip, window
    ends (W,), window probabilities (W, K))`` each, postures from the landmarks (``width`` x
    ``height`` frames), every person's windows through one monitor (``detect_falls``)."""
    tracks = {}
    for tid, seq, ends, probs in people:
        if len(ends):
            postures = frame_postures(seq.timestamps, seq.image, seq.visibility, width, height)
            tracks[tid] = track_windows(postures, ends, probs, window_seconds, rule.spec.posture_s)
    return detect_falls(tracks, rule)


def falls_of(events: Sequence[FallEvent], track_id: int | None) -> list[FallEvent]:
    """The ``fall`` events of the person ``track_id``: raised on their track, or on a track that
    took their fall over (``handed_over_from``)."""
    if track_id is None:
        return []
    return [e for e in events if e.kind == "fall" and track_id in (e.track_id, e.handed_over_from)]


def detect_falls(tracks: Mapping[int, Sequence[FallWindow]], rule: FallRule) -> list[FallEvent]:
    """The events of a whole clip: every track's windows fed in time order, as a stream would
    (a track ends after its last window)."""
    monitor = FallMonitor(rule)
    order = sorted(((w.end, tid, i) for tid, ws in tracks.items() for i, w in enumerate(ws)))
    events: list[FallEvent] = []
    for _, tid, i in order:
        events.extend(monitor.update(tid, tracks[tid][i]))
        if i == len(tracks[tid]) - 1:
            monitor.end_track(tid)
    return events
