"""Confirmed fall events in the service: the one rule of ``skeleton.falls`` fed by a stream's tracks
as they come (`StreamFalls`); a finished clip's people go through ``skeleton.falls.clip_events``.

A model has a fall rule when its manifest names fall classes (the label group of ``fall_rule``);
others get no monitor and pay nothing. A request or a stream may override the rule's parameters
(`rule_for`: validated by ``skeleton.manifest.FallRuleSpec``, a bad value is a 422 / an error
message naming the field).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from pydantic import ValidationError

from service.buffer import TrackWindow
from service.core.errors import ServiceError, validation_message
from service.frames import TrackedFrame
from service.metrics import Metrics
from skeleton.falls import (
    FallEvent,
    FallMonitor,
    FallRule,
    FramePostures,
    fall_window,
    frame_postures,
)
from skeleton.manifest import ModelManifest

__all__ = ["StreamFalls", "count_events", "rule_for"]

# A stream keeps this much posture history beyond a window (the window's first frames and margin).
_HISTORY_MARGIN_S = 1.0
# Trim a track's history in batches of at least this many frames (a list delete is O(n)).
_TRIM_BATCH = 32
# Ended tracks stay in the monitor this long (a new track may take over their fall), then go.
_FORGET_AFTER_S = 60.0


def rule_for(manifest: ModelManifest, overrides: Mapping[str, float] | None = None) -> FallRule | None:
    """The model's fall rule with a request's or stream's ``overrides``; None when the model has no
    fall classes. Overrides are validated either way (a 422 ``invalid_request`` names the field)."""
    try:
        rule = FallRule.from_manifest(manifest, **dict(overrides or {}))
    except ValidationError as exc:
        raise _invalid(validation_message(exc.errors())) from None
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return rule if rule.fall_classes else None


def _invalid(message: str) -> ServiceError:
    return ServiceError(
        422, "invalid_request", f"fall rule: {message}", "see 'Fall events' in docs/api.md for the parameters"
    )


_COLUMNS = tuple(f.name for f in fields(FramePostures))  # timestamps first
_UNSEEN = (np.nan,) * (len(_COLUMNS) - 2) + (0.0,)  # nothing measured, no core joint seen


@dataclass
class _History:
    """One track's recent per-frame posture measures (rows of the ``FramePostures`` columns)."""

    rows: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, frame: TrackedFrame, person_pose: tuple[np.ndarray, np.ndarray] | None) -> None:
        if person_pose is None:
            self.rows.append((frame.timestamp, *_UNSEEN))
            return
        image, visibility = person_pose
        t = np.array([frame.timestamp])
        one = frame_postures(t, image[None], visibility[None], frame.width, frame.height)
        self.rows.append(tuple(float(getattr(one, c)[0]) for c in _COLUMNS))

    def postures(self, start: float) -> FramePostures:
        """The frames from the last one at or before ``start`` on."""
        lo = max(bisect.bisect_right(self.rows, start, key=lambda r: r[0]) - 1, 0)
        return FramePostures(*np.asarray(self.rows[lo:], np.float64).T)

    def trim(self, before: float) -> None:
        k = bisect.bisect_left(self.rows, before, key=lambda r: r[0]) - 1  # keep one frame before
        if k >= _TRIM_BATCH:
            del self.rows[:k]


class StreamFalls:
    """Fall state of one stream: a posture history per open track and one ``FallMonitor``.

    Call `update` once per frame, in frame order, after the frame's windows were classified.
    """

    def __init__(self, rule: FallRule, window_seconds: float) -> None:
        self.rule = rule
        self.monitor = FallMonitor(rule)
        self.window_seconds = window_seconds
        self._open: dict[int, _History] = {}
        self._forgot_at = 0.0

    def update(
        self, frame: TrackedFrame, windows: Sequence[TrackWindow], probs: np.ndarray | None
    ) -> list[FallEvent]:
        """This frame's postures, then its classified windows; events decided, with track ids."""
        self._end(frame.ended_before)
        self._observe(frame)
        events: list[FallEvent] = []
        posture_s = self.rule.spec.posture_s
        for w, p in zip(windows, probs if probs is not None else (), strict=True):
            hist = self._open.get(w.track_id)
            if hist is None:
                continue
            window = fall_window(hist.postures(w.start_time), w.start_time, w.end_time, p, posture_s)
            events.extend(self.monitor.update(w.track_id, window))
        self._end(frame.closed)
        if frame.timestamp - self._forgot_at > _FORGET_AFTER_S:
            self._forget(frame.timestamp - _FORGET_AFTER_S)
        return events

    def _observe(self, frame: TrackedFrame) -> None:
        seen = set()
        for person in frame.people:
            hist = self._open.setdefault(person.track_id, _History())
            hist.add(frame, (person.pose.image, person.pose.visibility))
            seen.add(person.track_id)
        horizon = frame.timestamp - self.window_seconds - _HISTORY_MARGIN_S
        for tid, hist in self._open.items():
            if tid not in seen:
                hist.add(frame, None)
            hist.trim(horizon)

    def _end(self, track_ids: Iterable[int]) -> None:
        for tid in track_ids:
            if self._open.pop(tid, None) is not None:
                self.monitor.end_track(tid)

    def _forget(self, before: float) -> None:
        self.monitor.forget(before)
        self._forgot_at = before + _FORGET_AFTER_S


def count_events(metrics: Metrics, model: str, source: str, events: Iterable[FallEvent]) -> None:
    """``skelact_fall_events_total{model, kind, source}``."""
    for e in events:
        metrics.fall_events.labels(model=model, kind=e.kind, source=source).inc()
