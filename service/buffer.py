"""Per-track skeleton buffers that emit model windows on the manifest's clock.

A track's poses arrive at the camera's rate with gaps (missed detections, dropped frames);
windows are cut on the model's clock instead: ``length`` frames at ``fps``, a new one every
``stride`` model frames. Resampling, gap filling and normalisation are
``skeleton.preprocess.sequence_to_layout`` + ``prepare_window`` -- the exact code training uses.
A model reading several inputs (an action set next to a base model, `service.combined`) gets each
input's window at the same end time, stacked on the channel axis (`cut_window`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from skeleton.manifest import InputSpec
from skeleton.preprocess import prepare_window, sequence_to_layout
from skeleton.types import PersonPose, SkeletonSequence

# Keep this much history beyond one window so interpolation at the window's start has a neighbour.
_HISTORY_MARGIN_S = 1.0
_EPS = 1e-6
# Streams drop old frames in batches of at least this many (a list delete is O(n)).
_TRIM_BATCH = 32


@dataclass(frozen=True, slots=True)
class TrackWindow:
    """One model input cut from a track, due for classification."""

    track_id: int
    start_time: float
    end_time: float
    tensor: np.ndarray  # (C, T, V) float32


def to_layouts(seq: SkeletonSequence, specs: tuple[InputSpec, ...], frame_height: float) -> np.ndarray:
    """(T, V, 3 x inputs): the sequence in each input's layout and coordinates, side by side."""
    return np.concatenate([sequence_to_layout(seq, s, frame_height) for s in specs], axis=-1)


def cut_window(specs: tuple[InputSpec, ...], times: np.ndarray, joints: np.ndarray, end: float) -> np.ndarray:
    """(C, T, V): each input's window ending at ``end`` (``joints`` from `to_layouts`), stacked."""
    if len(specs) == 1:
        return prepare_window(times, joints, specs[0], end)
    parts = np.split(joints, len(specs), axis=-1)
    return np.concatenate([prepare_window(times, j, s, end) for s, j in zip(specs, parts, strict=True)])


class TrackBuffer:
    """Recent poses of one person; knows when the next window is due and how to cut it.

    The first window ends one window-length after the track was first seen; later ones every
    ``stride / fps`` seconds. ``flush`` cuts a last window at the end of a clip when the track
    was shorter than one window, so short clips still get a label.
    """

    def __init__(
        self,
        track_id: int,
        spec: InputSpec | tuple[InputSpec, ...],
        stride: int | None = None,
        keep_all: bool = False,
        history_s: float = 0.0,
    ) -> None:
        self.track_id = track_id
        self.specs = spec if isinstance(spec, tuple) else (spec,)
        self.spec = self.specs[0]  # its window sets the clock
        self.window_spec = self.spec.window.with_stride(stride)
        self.keep_all = keep_all  # clips keep everything (for the timeline); streams only recent history
        self.history_s = history_s  # streams: keep at least this much (an example from recent seconds)
        self._times: list[float] = []
        self._joints: list[np.ndarray] = []  # (V, 3 x inputs) per frame in the model layout, NaN: unseen
        self._seen: list[bool] = []
        self._missing: np.ndarray | None = None
        self.first_seen: float | None = None
        self.last_seen: float | None = None
        self.windows_emitted = 0
        self._next_end: float | None = None
        self._first_end = 0.0
        self._k = 0

    @property
    def fill(self) -> float:
        """How much of the first window has been seen (1.0 once windows are being emitted)."""
        if self.first_seen is None or self.last_seen is None:
            return 0.0
        if self.window_spec.seconds <= 0:
            return 1.0
        return float(min(1.0, (self.last_seen - self.first_seen) / self.window_spec.seconds))

    def push(self, timestamp: float, pose: PersonPose | None, frame_height: int) -> None:
        """Add this frame's pose for the track (``None``: not seen in this frame)."""
        if self._times and timestamp <= self._times[-1]:
            return  # out of order or repeated: ignore rather than corrupt the interpolation
        self._times.append(timestamp)
        self._joints.append(self._to_layout(timestamp, pose, frame_height))
        self._seen.append(pose is not None)
        if pose is not None:
            if self.first_seen is None:
                self.first_seen = timestamp
                self._first_end = timestamp + self.window_spec.seconds
                self._next_end = self._first_end
            self.last_seen = timestamp
        if not self.keep_all:
            horizon = timestamp - max(self.window_spec.seconds + _HISTORY_MARGIN_S, self.history_s)
            k = bisect.bisect_left(self._times, horizon) - 1  # keep one frame before the horizon
            if k >= _TRIM_BATCH:
                del self._times[:k], self._joints[:k], self._seen[:k]

    def due(self) -> list[float]:
        """End times of windows completed by the frames pushed so far (consumed once returned).

        Windows end at ``first_seen + seconds + k * stride / fps`` and never after the track's last
        sighting: while a person is missed, windows wait (and catch up if the person comes back).
        """
        if self._next_end is None or self.last_seen is None:
            return []
        ends: list[float] = []
        while self._next_end <= self.last_seen + _EPS:
            ends.append(self._next_end)
            self._k += 1
            self._next_end = self._first_end + self._k * self.window_spec.hop_s  # no drift from repeated adds
        return ends

    def flush(self) -> list[float]:
        """At the end of a clip: one window ending at the last sighting if none was emitted."""
        if self.windows_emitted == 0 and self.last_seen is not None and self._next_end is not None:
            self._next_end = self.last_seen + self.window_spec.hop_s
            return [self.last_seen]
        return []

    def _to_layout(self, timestamp: float, pose: PersonPose | None, frame_height: int) -> np.ndarray:
        """One frame through `to_layouts` (a per-frame map), converted once on arrival."""
        if pose is None:
            if self._missing is None:
                probe = SkeletonSequence.from_poses([timestamp], [None])
                self._missing = to_layouts(probe, self.specs, float(frame_height))[0]
            return self._missing
        seq = SkeletonSequence.from_poses([timestamp], [pose])
        return to_layouts(seq, self.specs, float(frame_height))[0]

    def window(self, end_time: float) -> TrackWindow:
        """Cut the model input ending at ``end_time`` (shared preprocess code).

        Only the frames from the last sighting at or before the window's start to the first one
        at or after its end go in: interpolation and gap measurement inside the window depend on
        nothing else, so the result equals ``prepare_window`` on the whole track, in O(window).
        """
        lo, hi = self._span(end_time - self.window_spec.seconds, end_time)
        times = np.asarray(self._times[lo:hi], np.float64)
        tensor = cut_window(self.specs, times, np.stack(self._joints[lo:hi]), end_time)
        self.windows_emitted += 1
        return TrackWindow(self.track_id, end_time - self.window_spec.seconds, end_time, tensor)

    def _span(self, start: float, end: float) -> tuple[int, int]:
        seen, n = self._seen, len(self._times)
        lo = bisect.bisect_right(self._times, start) - 1
        while lo > 0 and not seen[lo]:
            lo -= 1
        hi = bisect.bisect_left(self._times, end)
        while hi < n - 1 and not seen[hi]:
            hi += 1
        return max(lo, 0), min(hi, n - 1) + 1

    def recent(self, seconds: float, spec: InputSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(times, (T, V, 3) joints in ``spec``'s layout, seen) of the last ``seconds`` up to the
        last sighting (an enrolment example from a stream); None when no input of the model is
        ``spec``."""
        if spec not in self.specs:
            return None
        if self.last_seen is None:
            return np.zeros(0), np.zeros((0, 0, 3), np.float32), np.zeros(0, bool)
        lo = bisect.bisect_left(self._times, self.last_seen - seconds)
        hi = bisect.bisect_right(self._times, self.last_seen)
        times = np.asarray(self._times[lo:hi], np.float64)
        part = self.specs.index(spec)
        joints = np.stack(self._joints[lo:hi])[..., 3 * part : 3 * part + 3]
        return times, joints, np.asarray(self._seen[lo:hi], bool)

    def cut(self, ends: list[float]) -> list[TrackWindow]:
        return [self.window(e) for e in ends]
