"""Temporal smoothing of window probabilities so labels do not flicker.

An exponential moving average (EMA) of the probabilities feeds a hysteresis rule: a label
starts when its smoothed score reaches ``enter``, ends when it drops below ``exit``, and a
different label takes over only with a lead of ``margin``. Starts and ends are events with
the stream time of the window that caused them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from service.core.config import Settings


@dataclass(frozen=True, slots=True)
class LabelEvent:
    kind: Literal["start", "end"]
    label: str
    time: float


@dataclass(frozen=True, slots=True)
class SmoothedState:
    probs: np.ndarray  # (K,) smoothed
    label: str | None  # active label after hysteresis
    confidence: float  # smoothed score of the active label (of the best one when none is active)
    events: tuple[LabelEvent, ...]


@dataclass(frozen=True, slots=True)
class SmoothingConfig:
    alpha: float = 0.5
    enter: float = 0.5
    exit: float = 0.35
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if self.exit > self.enter:
            raise ValueError("the exit threshold must not exceed the enter threshold")


def smoothing_config(settings: Settings) -> SmoothingConfig:
    """The smoothing the settings ask for (``SKELACT_EMA_ALPHA`` and the hysteresis thresholds)."""
    return SmoothingConfig(
        settings.ema_alpha, settings.enter_threshold, settings.exit_threshold, settings.switch_margin
    )


class LabelSmoother:
    """EMA + hysteresis for one track."""

    def __init__(self, labels: list[str], config: SmoothingConfig) -> None:
        self.labels = labels
        self.config = config
        self._ema: np.ndarray | None = None
        self._active: int | None = None

    @property
    def probs(self) -> np.ndarray | None:
        return self._ema

    @property
    def label(self) -> str | None:
        return None if self._active is None else self.labels[self._active]

    def update(self, probs: np.ndarray, time: float) -> SmoothedState:
        c = self.config
        p = np.asarray(probs, np.float32)
        self._ema = p.copy() if self._ema is None else c.alpha * p + (1 - c.alpha) * self._ema
        ema = self._ema
        best = int(ema.argmax())
        events: list[LabelEvent] = []
        if self._active is not None:
            active = self._active
            dropped = ema[active] < c.exit
            overtaken = best != active and ema[best] >= c.enter and ema[best] - ema[active] >= c.margin
            if dropped or overtaken:
                events.append(LabelEvent("end", self.labels[active], time))
                self._active = None
        if self._active is None and ema[best] >= c.enter:
            self._active = best
            events.append(LabelEvent("start", self.labels[best], time))
        shown = self._active if self._active is not None else best
        return SmoothedState(ema.copy(), self.label, float(ema[shown]), tuple(events))

    def end(self, time: float) -> tuple[LabelEvent, ...]:
        """End the active label (the track disappeared, or the stream switched models)."""
        if self._active is None:
            return ()
        label = self.labels[self._active]
        self._active = None
        return (LabelEvent("end", label, time),)


@dataclass(slots=True)
class _Open:
    label: str
    start: float
    scores: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TimelineSegment:
    start: float
    end: float
    label: str
    confidence: float


class TimelineBuilder:
    """Turns a track's smoothed states into labelled segments for POST /recognize."""

    def __init__(self) -> None:
        self._open: _Open | None = None
        self.segments: list[TimelineSegment] = []

    def add(self, state: SmoothedState, segment_start: float | None = None) -> None:
        """Feed one window's state. ``segment_start``: when a label starting here really began."""
        for ev in state.events:
            if ev.kind == "end" and self._open is not None:
                self._close(ev.time)
            elif ev.kind == "start":
                self._open = _Open(ev.label, ev.time if segment_start is None else segment_start)
        if self._open is not None and state.label == self._open.label:
            self._open.scores.append(state.confidence)

    def end(self, time: float) -> list[TimelineSegment]:
        """Close the open segment at ``time`` (the track's last sighting); returns all segments."""
        if self._open is not None:
            self._close(time)
        return self.segments

    def _close(self, time: float) -> None:
        o = self._open
        assert o is not None
        conf = float(np.mean(o.scores)) if o.scores else 0.0
        self.segments.append(TimelineSegment(o.start, max(time, o.start), o.label, conf))
        self._open = None


def timeline(
    labels: list[str],
    config: SmoothingConfig,
    ends: np.ndarray,
    probs: np.ndarray,
    window_seconds: float,
    last_seen: float,
    first_seen: float | None = None,
) -> list[TimelineSegment]:
    """Segments of a whole track's windows at once (a label found in the first window dates from
    that window's start, or from ``first_seen`` when the person was seen later), as the clip
    pipeline builds them window by window."""
    smoother = LabelSmoother(labels, config)
    builder = TimelineBuilder()
    for i, (end, p) in enumerate(zip(ends, probs, strict=True)):
        state = smoother.update(p, float(end))
        start = float(end) - window_seconds
        if first_seen is not None:
            start = max(start, first_seen)
        builder.add(state, segment_start=start if i == 0 else None)
    return builder.end(last_seen)
