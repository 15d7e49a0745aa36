"""One WebSocket stream: frames in, per-frame track states, labels and events out.

Decode + pose + tracking of a frame run together on the pose pool (one hop off the event
loop); windows due at that frame go through the model's micro-batcher, where they share a
call with the windows of every other stream and clip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.buffer import Window
from service.metrics import Metrics
from service.pipeline import PoseTrackStage, TrackedFrame, TrackSet, smoothing_config, stack
from service.pose import PoseEstimator
from service.registry import LoadedModel
from service.schemas import EventOut, FrameMessage, FrameTimings, SkeletonFrameIn, TrackState, top_scores
from service.settings import Settings
from service.skeleton_input import frame_people
from service.smoothing import LabelEvent
from service.tracking import TrackedPerson
from service.video import decode_image
from skeleton.types import PersonPose

log = logging.getLogger(__name__)

# Same as the tracker's default max_missed_s.
CLIENT_TRACK_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Arrival:
    """A frame as the receiver got it: raw bytes or a skeleton frame, with its arrival time."""

    frame_id: int
    received_at: float  # time.perf_counter()
    image: bytes | None = None
    skeleton: SkeletonFrameIn | None = None


class StreamSession:
    """State of one connection: its pose estimator, tracker, buffers and smoothers."""

    def __init__(
        self,
        model: LoadedModel,
        settings: Settings,
        pose_pool: Executor,
        metrics: Metrics,
        stride: int | None = None,
        top: int | None = None,
        stage_factory: Callable[[], Awaitable[PoseTrackStage]] | None = None,
        solo_factory: Callable[[], Awaitable[PoseTrackStage]] | None = None,
    ) -> None:
        self.settings = settings
        self.pose_pool = pose_pool
        self.metrics = metrics
        self.stride = stride or settings.stride
        self.top = top or settings.top_k
        self.model = model
        model.batcher.add_producer()  # until close(): other streams' windows may wait for ours
        self._producing = True
        self.tracks = TrackSet(model, smoothing_config(settings), self.stride, keep_history=False)
        self.stage: PoseTrackStage | None = None
        self.stage_factory = stage_factory or self._new_stage
        self.started = time.perf_counter()
        self._last_t = -1.0
        self._last_stamp = -1.0
        self._lane_stages: list[PoseTrackStage] = []  # estimators of pose lanes 1.. (lane 0: stage)
        # the estimator for frames run alone on every pose core (None: that mode is off)
        self.solo_factory = solo_factory
        self._solo_stage: asyncio.Future[PoseTrackStage] | None = None
        self._client_seen: dict[int, float] = {}
        self._reopened: list[tuple[int, LabelEvent]] = []  # end events of tracks that came back
        self._tracks_gauge = 0

    async def _new_stage(self) -> PoseTrackStage:
        """Build a stage off the event loop (loading MediaPipe's graph takes a while)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.pose_pool, PoseTrackStage, self.settings
        )

    async def open(self) -> None:
        self.stage = await self.stage_factory()

    async def close(self) -> None:
        if self._producing:
            self.model.batcher.remove_producer()
            self._producing = False
        self.metrics.active_tracks.dec(self._tracks_gauge)
        self._tracks_gauge = 0
        stages = [*([self.stage] if self.stage is not None else []), *self._lane_stages]
        self.stage, self._lane_stages = None, []
        if self._solo_stage is not None:
            solo, self._solo_stage = self._solo_stage, None
            with contextlib.suppress(Exception):  # a failed build was logged when it failed
                stages.append(await solo)
        for stage in stages:
            await asyncio.get_running_loop().run_in_executor(self.pose_pool, stage.close)

    def switch_model(self, model: LoadedModel) -> list[tuple[int, LabelEvent]]:
        """Use another model from now on; open labels end, buffers restart (new window geometry)."""
        now = self._stream_time(time.perf_counter())
        events = [(s.track_id, e) for s in self.tracks.slots.values() for e in self.tracks.finish(s, now)]
        if self._producing:
            self.model.batcher.remove_producer()
            model.batcher.add_producer()
        self.model = model
        self.tracks = TrackSet(model, smoothing_config(self.settings), self.stride, keep_history=False)
        return events

    def _expired(self, people: tuple[TrackedPerson, ...], ts: float) -> tuple[int, ...]:
        """Client-numbered tracks end like the tracker's do: unseen for ``CLIENT_TRACK_TIMEOUT_S``.

        A track that comes back after that starts afresh: its old state is closed here, before this
        frame is observed (else its buffer would "catch up" on windows over the whole gap).
        """
        gone = tuple(t for t, seen in self._client_seen.items() if ts - seen > CLIENT_TRACK_TIMEOUT_S)
        for t in gone:
            del self._client_seen[t]
        back = {p.track_id for p in people}.intersection(gone)
        for t in back:
            slot = self.tracks.slots.pop(t, None)
            if slot is not None:
                self._reopened.extend((t, e) for e in self.tracks.finish(slot, ts))
        for p in people:
            self._client_seen[p.track_id] = ts
        return tuple(t for t in gone if t not in back)

    def _end_after_gap(self, stage: PoseTrackStage, ts: float, frame_id: int) -> None:
        """After a pause longer than the track timeout every track has ended (the tracker's rule);
        end them before this frame, so a person seen again starts a new track rather than matching
        the old one and catching up on windows over the whole gap."""
        if self._last_t < 0 or ts - self._last_t <= CLIENT_TRACK_TIMEOUT_S or not self.tracks.slots:
            return
        for t in stage.track((), ts, frame_id, 0, 0).closed:  # nobody seen at ts: stale tracks close
            slot = self.tracks.slots.pop(t, None)
            if slot is not None:
                self._reopened.extend((t, e) for e in self.tracks.finish(slot, ts))

    def _stream_time(self, received_at: float) -> float:
        return max(received_at - self.started, self._last_stamp + 1e-3)

    @property
    def lanes(self) -> int:
        """Frames of this stream that may be in pose at once (``SKELACT_STREAM_POSE_LANES``,
        at most one per pose worker). Each lane has its own MediaPipe estimator, fed every
        lanes-th frame; tracking, classification and replies stay in frame order."""
        return max(1, min(self.settings.stream_pose_lanes, self.settings.pose_workers))

    def stamp(self, arrival: Arrival) -> float:
        """Stream time of a frame, strictly increasing; call in arrival order, when it is taken."""
        if arrival.skeleton is not None:
            ts = max(arrival.skeleton.timestamp, self._last_stamp + 1e-3)
        else:
            ts = self._stream_time(arrival.received_at)
        self._last_stamp = ts
        return ts

    async def open_solo(self) -> None:
        """Get the estimator for solo frames (one call on every pose core) now, before the first
        frame: when no spare is left it is built, and a graph build holds the GIL
        (`ServiceState.refill_spares`), which would stall a frame later."""
        if self.solo_factory is not None and self._solo_stage is None:
            self._start_solo_build()
            assert self._solo_stage is not None
            await asyncio.wait([self._solo_stage])

    def solo_ready(self) -> bool:
        """Whether the estimator for solo frames is here; starts getting it on the first ask, so
        the frames meanwhile use the lanes."""
        if self.solo_factory is None:
            return False
        if self._solo_stage is None:
            self._start_solo_build()
        built = self._solo_stage
        return built is not None and built.done() and not built.cancelled() and built.exception() is None

    def _start_solo_build(self) -> None:
        assert self.solo_factory is not None
        self._solo_stage = asyncio.ensure_future(self.solo_factory())
        self._solo_stage.add_done_callback(_log_failed_build)

    async def pose(self, arrival: Arrival, ts: float, lane: int = 0, solo: bool = False) -> Posed | None:
        """Decode + pose of an image frame on pose lane ``lane``, or with ``solo`` on the estimator
        whose calls use every pose core (`solo_ready`; the caller holds every pose slot). None for
        a skeleton frame."""
        if arrival.image is None:
            return None
        if solo:
            assert self._solo_stage is not None and self._solo_stage.done(), "solo_ready() first"
            estimator = self._solo_stage.result().estimator
            assert estimator is not None
        else:
            estimator = await self._lane_estimator(lane)
        return await asyncio.get_running_loop().run_in_executor(
            self.pose_pool, _decode_pose, estimator, arrival.image, ts, self.settings.pose_max_side
        )

    async def _lane_estimator(self, lane: int) -> PoseEstimator:
        assert self.stage is not None and self.stage.estimator is not None, "open() first"
        if lane == 0:
            return self.stage.estimator
        while len(self._lane_stages) < lane:  # built on first use: one stream alone on a server
            self._lane_stages.append(await self.stage_factory())
        estimator = self._lane_stages[lane - 1].estimator
        assert estimator is not None
        return estimator

    async def finish(
        self,
        arrival: Arrival,
        ts: float,
        posed: Posed | None,
        counters: tuple[int, int, int],
        t_start: float,
    ) -> FrameMessage:
        """Tracking, windows, classification and the reply of a frame; call in frame order."""
        assert self.stage is not None, "open() first"
        stage = self.stage
        decode_s = pose_s = 0.0
        if arrival.skeleton is not None:
            sk = arrival.skeleton
            people, poses, width, height = frame_people(sk, self.model.manifest.input.coordinates)
            if people is None and not poses and self._client_seen:
                people = ()  # an empty frame of a client that numbers its own tracks
            if people is not None:
                tracked = TrackedFrame(arrival.frame_id, ts, width, height, people, self._expired(people, ts))
            else:
                assert poses is not None
                self._end_after_gap(stage, ts, arrival.frame_id)
                tracked = stage.track(poses, ts, arrival.frame_id, width, height)
        else:
            assert posed is not None
            self._end_after_gap(stage, ts, arrival.frame_id)
            tracked = stage.track(posed.poses, ts, arrival.frame_id, posed.width, posed.height)
            decode_s, pose_s = posed.decode_s, posed.pose_s
        self._last_t = tracked.timestamp
        outcome = self.tracks.observe(tracked)
        events, self._reopened = self._reopened, []
        for slot in outcome.closed:
            events.extend((slot.track_id, e) for e in self.tracks.finish(slot, tracked.timestamp))
        classify_s = 0.0
        if outcome.windows:
            res = await self.model.batcher.submit(stack(list(outcome.windows)))
            classify_s = res.infer_ms / 1e3 + res.wait_ms / 1e3
            events.extend(self.tracks.apply(outcome.windows, res.probs))
        self._update_gauges()
        msg = self._encode(
            tracked, events, counters, decode_s, pose_s, classify_s, t_start, arrival.received_at
        )
        self._observe(msg, outcome.windows)
        return msg

    def _encode(
        self,
        tracked: TrackedFrame,
        events: list[tuple[int, LabelEvent]],
        counters: tuple[int, int, int],
        decode_s: float,
        pose_s: float,
        classify_s: float,
        t_start: float,
        received_at: float,
    ) -> FrameMessage:
        labels = self.model.labels
        states = []
        for person in tracked.people:
            slot = self.tracks.slots.get(person.track_id)
            pose = person.pose
            lm = np.concatenate([pose.image[:, :2], pose.visibility[:, None]], axis=1)
            st = slot.last_state if slot is not None else None
            states.append(
                TrackState(
                    track_id=person.track_id,
                    box=[round(v, 1) for v in (pose.box.x0, pose.box.y0, pose.box.x1, pose.box.y1)],
                    landmarks=np.round(lm.astype(np.float64), 2).tolist(),
                    label=st.label if st is not None else None,
                    confidence=round(st.confidence, 4) if st is not None else 0.0,
                    top=top_scores(labels, st.probs if st is not None else None, self.top),
                    window_fill=round(slot.buffer.fill, 3) if slot is not None else 0.0,
                )
            )
        now = time.perf_counter()
        total = now - t_start
        received, processed, dropped = counters
        return FrameMessage(
            frame_id=tracked.index,
            timestamp=round(tracked.timestamp, 4),
            width=tracked.width,
            height=tracked.height,
            tracks=states,
            events=[
                EventOut(type=e.kind, track_id=tid, label=e.label, time=round(e.time, 4)) for tid, e in events
            ],
            timings_ms=FrameTimings(
                decode=_ms(decode_s),
                pose=_ms(pose_s),
                track=_ms(tracked.track_s),
                classify=_ms(classify_s),
                total=_ms(total),
                latency=_ms(now - received_at),
            ),
            received=received,
            processed=processed,
            dropped=dropped,
        )

    def _update_gauges(self) -> None:
        n = self.tracks.active
        self.metrics.active_tracks.inc(n - self._tracks_gauge)
        self._tracks_gauge = n

    def _observe(self, msg: FrameMessage, windows: tuple[Window, ...]) -> None:
        m, t = self.metrics, msg.timings_ms
        for stage_name in ("decode", "pose", "track", "classify", "total", "latency"):
            m.observe_stage(stage_name, getattr(t, stage_name) / 1e3, "stream")
        m.frames_processed.labels(source="stream").inc()
        for ev in msg.events:
            if ev.type == "start":
                m.events.labels(model=self.model.name, label=ev.label).inc()


def _log_failed_build(built: asyncio.Future[PoseTrackStage]) -> None:
    """The stream keeps its lanes; say why it cannot pose solo."""
    if not built.cancelled() and built.exception() is not None:
        log.error("building the solo pose estimator failed", exc_info=built.exception())


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


@dataclass(frozen=True, slots=True)
class Posed:
    """A frame after decode and pose, before tracking (what a pose lane hands on)."""

    width: int
    height: int
    poses: tuple[PersonPose, ...]
    decode_s: float
    pose_s: float


def _decode_pose(estimator: PoseEstimator, data: bytes, ts: float, max_side: int | None) -> Posed:
    t0 = time.perf_counter()
    rgb = decode_image(data, max_side)
    t1 = time.perf_counter()
    poses = estimator.estimate(rgb, ts)
    return Posed(rgb.shape[1], rgb.shape[0], poses, t1 - t0, time.perf_counter() - t1)


FrameHandler = Callable[[Arrival], None]
