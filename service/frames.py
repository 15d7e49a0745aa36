"""A frame's people before and after tracking, and the one place that tracks them.

Every frame a clip or a stream processes becomes a `PosedFrame`: the poses an estimator found in
an image, or the skeletons a client sent -- either numbered by the client (``people``) or left to
the server's tracker (``poses``). `FrameTracking.track` turns it into a `TrackedFrame` the same way
for uploaded clips and WebSocket streams: the server's tracker (`perception.tracking.tracker`)
gives ids, and tracks end -- the server's and the client-numbered ones alike -- once unseen for the
tracker's ``max_missed_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from perception.tracking.tracker import TrackedPerson, Tracker, TrackUpdate
from skeleton.types import PersonPose

__all__ = ["FrameTracking", "PosedFrame", "TrackedFrame", "TrackedPerson"]


@dataclass(frozen=True, slots=True)
class PosedFrame:
    """One frame's people before tracking, with how long decode and pose took."""

    index: int
    timestamp: float
    width: int
    height: int
    poses: tuple[PersonPose, ...] = ()  # for the server's tracker
    people: tuple[TrackedPerson, ...] | None = None  # the client's own track ids (then no poses)
    decode_s: float = 0.0
    pose_s: float = 0.0
    queue_s: float = 0.0  # streams: from the frame's arrival to the start of its decode + pose


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """One frame after tracking: who is where, and which tracks ended.

    ``ended_before``: tracks that ended before this frame (unseen for longer than the timeout, and
    a client-numbered one seen again here restarts); ``closed``: tracks that end with this frame.
    """

    index: int
    timestamp: float
    width: int
    height: int
    people: tuple[TrackedPerson, ...]
    closed: tuple[int, ...] = ()
    ended_before: tuple[int, ...] = ()
    track_s: float = 0.0

    @property
    def update(self) -> TrackUpdate:
        return TrackUpdate(self.timestamp, self.people, self.closed)


class FrameTracking:
    """Tracking of one clip or stream: the server's tracker, and the client-numbered tracks.

    Not thread-safe: call `track` with the frames in order. ``min_visibility``: a pose whose mean
    landmark visibility is lower counts as not seen (``SKELACT_MIN_POSE_VISIBILITY``).
    ``confirm_s``: the tracker's probation (``SKELACT_TRACK_CONFIRM_S``; None: its default).
    ``tentative``: a frame's people include the tracks still on probation (a clip's pass: the
    finished clip keeps those that get confirmed, from their first frame); False: only confirmed
    ones, from confirmation on (a stream, which cannot take back what it has sent).
    """

    def __init__(
        self, min_visibility: float = 0.0, confirm_s: float | None = None, tentative: bool = True
    ) -> None:
        self.tracker = Tracker() if confirm_s is None else Tracker(confirm_s=confirm_s)
        self.tentative = tentative
        self.min_visibility = min_visibility
        self._client_seen: dict[int, float] = {}  # client track id -> last time seen
        self._last_t: float | None = None

    @property
    def timeout_s(self) -> float:
        """A track unseen for longer has ended (the tracker's rule, for client tracks too)."""
        return self.tracker.config.max_missed_s

    def track(self, frame: PosedFrame) -> TrackedFrame:
        t0 = time.perf_counter()
        ts = frame.timestamp
        people: tuple[TrackedPerson, ...] = ()
        closed: tuple[int, ...] = ()
        ended_before: tuple[int, ...] = ()
        if frame.people is not None or (not frame.poses and self._client_seen):
            people = frame.people or ()  # an empty frame also ages the client's tracks
            closed, ended_before = self._client_tracks(people, ts)
        if frame.people is None:
            poses = frame.poses
            if self.min_visibility > 0:
                poses = tuple(p for p in poses if float(p.visibility.mean()) >= self.min_visibility)
            if self._last_t is not None and ts - self._last_t > self.timeout_s:
                # after a pause longer than the timeout every track has ended: end them before this
                # frame, so a person seen again starts a new track rather than continuing the old
                # one (whose buffer would catch up on windows over the whole gap)
                ended_before += self.tracker.update((), ts).closed
            upd = self.tracker.update(poses, ts, (frame.width, frame.height))
            found = upd.tracks if self.tentative else tuple(p for p in upd.tracks if p.confirmed)
            people, closed, ts = people + found, closed + upd.closed, upd.timestamp_s
        self._last_t = ts
        return TrackedFrame(
            frame.index,
            ts,
            frame.width,
            frame.height,
            people,
            closed,
            ended_before,
            time.perf_counter() - t0,
        )

    def _client_tracks(
        self, people: tuple[TrackedPerson, ...], ts: float
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(closed, ended before) among the client-numbered tracks: unseen for the timeout, they
        end; one that comes back after that ended before this frame and starts afresh."""
        gone = tuple(t for t, seen in self._client_seen.items() if ts - seen > self.timeout_s)
        for t in gone:
            del self._client_seen[t]
        back = {p.track_id for p in people}.intersection(gone)
        for p in people:
            self._client_seen[p.track_id] = ts
        return tuple(t for t in gone if t not in back), tuple(t for t in gone if t in back)
