"""Per-track state of a clip or a stream: a window buffer and a label smoother per person.

`TrackSet.observe` pushes a `TrackedFrame`'s poses into their tracks' buffers and returns the
windows now due; `TrackSet.apply` feeds their class probabilities back to the smoothers. A
stream frees a track that ended; a clip keeps every track for its response (and a client-numbered
track seen again continues, so its windows follow the clip's window protocol over the gap).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from service.buffer import TrackBuffer, TrackWindow
from service.frames import TrackedFrame
from service.registry import LoadedModel
from service.smoothing import LabelEvent, LabelSmoother, SmoothedState, SmoothingConfig, TimelineBuilder

__all__ = ["STREAM_HISTORY_S", "FrameOutcome", "TrackRecord", "TrackSet", "stack_windows"]

# a stream keeps this many seconds of each track, so an example can be enrolled from them
STREAM_HISTORY_S = 10.0


@dataclass
class TrackRecord:
    """Everything kept for one person's track: buffer, smoother and (clips) the window results."""

    track_id: int
    buffer: TrackBuffer
    smoother: LabelSmoother
    last_state: SmoothedState | None = None
    window_ends: list[float] = field(default_factory=list)
    window_probs: list[np.ndarray] = field(default_factory=list)
    timeline: TimelineBuilder = field(default_factory=TimelineBuilder)

    def end_label(self, time_s: float) -> list[tuple[int, LabelEvent]]:
        """End the track's active label (the track ended, or the stream switched models)."""
        return [(self.track_id, e) for e in self.smoother.end(time_s)]


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What one frame changed: windows to classify, and the tracks that ended (before it or with it)."""

    windows: tuple[TrackWindow, ...]
    ended: tuple[TrackRecord, ...]
    buffer_s: float


class TrackSet:
    """One `TrackRecord` per track of a stream (``keep_history=False``) or a clip (True)."""

    def __init__(
        self, model: LoadedModel, smoothing: SmoothingConfig, stride: int | None, keep_history: bool
    ) -> None:
        self.model = model
        self.smoothing = smoothing
        self.stride = stride
        self.keep_history = keep_history
        self.open: dict[int, TrackRecord] = {}
        self.ended: dict[int, TrackRecord] = {}  # clips only: kept for the response

    @property
    def active(self) -> int:
        return len(self.open)

    def observe(self, frame: TrackedFrame) -> FrameOutcome:
        """Push this frame's poses into their tracks' buffers; return the windows now due."""
        t0 = time.perf_counter()
        ended = [r for r in map(self._end, frame.ended_before) if r is not None]
        seen: set[int] = set()
        for person in frame.people:
            record = self.open.get(person.track_id) or self._reopen_or_new(person.track_id)
            record.buffer.push(frame.timestamp, person.pose, frame.height)
            seen.add(person.track_id)
        for tid, record in self.open.items():
            if tid not in seen:
                record.buffer.push(frame.timestamp, None, frame.height)
        windows: list[TrackWindow] = []
        for record in self.open.values():
            windows.extend(record.buffer.cut(record.buffer.due()))
        ended += [r for r in map(self._end, frame.closed) if r is not None]
        return FrameOutcome(tuple(windows), tuple(ended), time.perf_counter() - t0)

    def flush(self) -> list[TrackWindow]:
        """End of a clip: a track shorter than one window gets its one window."""
        out: list[TrackWindow] = []
        for record in self.all_records():
            out.extend(record.buffer.cut(record.buffer.flush()))
        return out

    def record(self, track_id: int) -> TrackRecord | None:
        return self.open.get(track_id) or self.ended.get(track_id)

    def all_records(self) -> list[TrackRecord]:
        return sorted([*self.ended.values(), *self.open.values()], key=lambda r: r.track_id)

    def apply(
        self, windows: tuple[TrackWindow, ...] | list[TrackWindow], probs: np.ndarray
    ) -> list[tuple[int, LabelEvent]]:
        """Feed classified windows (in time order) to their tracks' smoothers; return new events."""
        events: list[tuple[int, LabelEvent]] = []
        for w, p in zip(windows, probs, strict=True):
            record = self.record(w.track_id)
            if record is None:
                continue
            state = record.smoother.update(p, w.end_time)
            record.last_state = state
            if self.keep_history:
                record.window_ends.append(w.end_time)
                record.window_probs.append(p)
                # a label found in the first window was there since the window started, but not
                # before the person was seen (a window at the end of a clip reaches further back)
                first = len(record.window_ends) == 1
                seen = record.buffer.first_seen
                start = w.start_time if seen is None else max(w.start_time, seen)
                record.timeline.add(state, segment_start=start if first else None)
            events.extend((w.track_id, e) for e in state.events)
        return events

    def _end(self, track_id: int) -> TrackRecord | None:
        record = self.open.pop(track_id, None)
        if record is not None and self.keep_history:
            self.ended[track_id] = record
        return record

    def _reopen_or_new(self, track_id: int) -> TrackRecord:
        record = self.ended.pop(track_id, None)
        if record is None:
            buffer = TrackBuffer(
                track_id,
                self.model.specs,
                self.stride,
                keep_all=self.keep_history,
                history_s=0.0 if self.keep_history else STREAM_HISTORY_S,
            )
            record = TrackRecord(track_id, buffer, LabelSmoother(self.model.labels, self.smoothing))
        self.open[track_id] = record
        return record


def stack_windows(windows: tuple[TrackWindow, ...] | list[TrackWindow]) -> np.ndarray:
    """(N, C, T, V): the windows as one classifier batch."""
    return np.stack([w.tensor for w in windows])
