"""One WebSocket stream's pipeline: a frame's decode + pose, then tracking, windows,
classification and the reply.

Decode + pose of a frame run together on the pose executor (one hop off the event loop), on one
of the stream's pose lanes (each its own estimator) or solo (an estimator whose calls use every
pose core); `service.streams.scheduler` decides which. Tracking and everything after run in frame
order (`reply`); windows due at a frame go through the model's micro-batcher, where they share a
call with the windows of every other stream and clip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import replace

from perception.pose.estimator import PoseEstimator, TasksPoseEstimator
from perception.video import decode_image
from service.core.config import Settings
from service.core.errors import ServiceError
from service.falls import StreamFalls, count_events, rule_for
from service.frames import FrameTracking, PosedFrame
from service.metrics import Metrics
from service.pose_pool import PosePool
from service.registry import LoadedModel
from service.schemas import FrameMessage, FrameTimings, HelloMessage
from service.skeleton_input import posed_frame
from service.smoothing import LabelEvent, smoothing_config
from service.streams.inbox import Arrival
from service.tracks import TrackSet, stack_windows
from service.wire import frame_message, ms

__all__ = ["FrameExpired", "StreamSession"]

log = logging.getLogger(__name__)


class FrameExpired(ServiceError):
    """A frame waited longer than ``SKELACT_STREAM_MAX_QUEUE_MS`` for its pose: dropped unposed
    (its reply would come too late to be live; the client is told, so one that waits for each
    reply sends the next)."""

    def __init__(self, frame_id: int, waited_s: float, bound_s: float) -> None:
        super().__init__(
            408,
            "frame_expired",
            f"frame {frame_id} waited {waited_s * 1e3:.0f} ms for a pose worker, more than "
            f"{bound_s * 1e3:.0f} ms (SKELACT_STREAM_MAX_QUEUE_MS): dropped",
            "the server is busy: send smaller or fewer frames, or add pose workers",
        )


def _queued(arrival: Arrival, bound_s: float) -> float:
    """Seconds ``arrival`` waited until now, the start of its pose; `FrameExpired` beyond ``bound_s``."""
    waited = time.perf_counter() - arrival.received_at
    if waited > bound_s:
        raise FrameExpired(arrival.frame_id, waited, bound_s)
    return waited


class StreamSession:
    """State of one connection: its pose estimators, tracking, buffers and smoothers."""

    def __init__(
        self,
        model: LoadedModel,
        settings: Settings,
        pose: PosePool,
        metrics: Metrics,
        stride: int | None = None,
        top: int | None = None,
        fall_overrides: Mapping[str, float] | None = None,
    ) -> None:
        self.fall_overrides = dict(fall_overrides or {})
        self.falls = _stream_falls(model, self.fall_overrides)  # None: the model has no fall classes
        self.settings = settings
        self.pose_pool = pose
        self.metrics = metrics
        self.stride = stride or settings.stride
        self.top = top or settings.top_k
        self.model = model
        model.batcher.add_producer()  # until close(): other streams' windows may wait for ours
        self._producing = True
        self.tracking = FrameTracking(settings.min_pose_visibility, settings.track_confirm_s, tentative=False)
        self.tracks = TrackSet(model, smoothing_config(settings), self.stride, keep_history=False)
        self.started = time.perf_counter()
        self._last_stamp = -1.0
        self._client_clock = False  # the last stamp was the client's (skeleton or capture time)
        self.lane_estimators: list[PoseEstimator] = []  # lane i's estimator (lane 0: from open())
        self._solo: asyncio.Future[PoseEstimator] | None = None  # None: not asked for yet
        self._posed_by: tuple[float, PoseEstimator] | None = None  # latest posed frame: (time, estimator)
        self._tracks_gauge = 0

    async def open(self) -> None:
        self.lane_estimators = [await self.pose_pool.take_estimator()]

    async def close(self) -> None:
        if self._producing:
            self.model.batcher.remove_producer()
            self._producing = False
        self.metrics.active_tracks.dec(self._tracks_gauge)
        self._tracks_gauge = 0
        estimators, self.lane_estimators = self.lane_estimators, []
        if self._solo is not None:
            solo, self._solo = self._solo, None
            with contextlib.suppress(Exception):  # a failed build was logged when it failed
                estimators.append(await solo)
        await self.pose_pool.close_estimators(estimators)

    def hello(self) -> HelloMessage:
        m = self.model
        return HelloMessage(
            model=m.name,
            labels=m.labels,
            provider=m.runtime.provider,
            window=m.window_info(self.stride),
            fall_rule=None if self.falls is None else self.falls.rule.spec,
        )

    def configure(self, model: LoadedModel, fall_overrides: Mapping[str, float] | None) -> None:
        """Another model and/or fall rule (``None``: keep the stream's overrides). Checked before
        anything changes (a `ServiceError` leaves the stream as it was); the fall monitor restarts."""
        overrides = self.fall_overrides if fall_overrides is None else dict(fall_overrides)
        falls = _stream_falls(model, overrides)
        if model is not self.model:
            self.switch_model(model)
        self.fall_overrides, self.falls = overrides, falls

    def switch_model(self, model: LoadedModel) -> list[tuple[int, LabelEvent]]:
        """Use another model from now on; open labels end, buffers restart (new window geometry).
        Its fall monitor: `configure`."""
        now = self._last_stamp if self._client_clock else self._stream_time(time.perf_counter())
        events = [e for record in self.tracks.open.values() for e in record.end_label(now)]
        if self._producing:
            self.model.batcher.remove_producer()
            model.batcher.add_producer()
        self.model = model
        self.tracks = TrackSet(model, smoothing_config(self.settings), self.stride, keep_history=False)
        return events

    def _stream_time(self, received_at: float) -> float:
        return max(received_at - self.started, self._last_stamp + 1e-3)

    def stamp(self, arrival: Arrival) -> float:
        """Stream time of a frame, strictly increasing; call in arrival order, when it is taken:
        the client's time (a skeleton frame's, or a binary frame's capture time), else the time
        since connect when it arrived."""
        client = arrival.skeleton.timestamp if arrival.skeleton is not None else arrival.capture_time
        self._client_clock = client is not None
        if client is None:
            ts = self._stream_time(arrival.received_at)
        else:
            ts = max(client, self._last_stamp + 1e-3)
        self._last_stamp = ts
        return ts

    # ----------------------------------------------------------------- estimators

    @property
    def lanes(self) -> int:
        """Frames of this stream that may be in pose at once (``SKELACT_STREAM_POSE_LANES``,
        at most one per pose worker). Each lane has its own MediaPipe estimator, fed every
        lanes-th frame; tracking, classification and replies stay in frame order."""
        return max(1, min(self.settings.stream_pose_lanes, self.settings.pose_workers))

    @property
    def solo_threads(self) -> int:
        """Threads of a solo frame's pose call (1: the stream never poses solo)."""
        return self.settings.solo_threads

    async def open_solo(self) -> None:
        """Get the estimator for solo frames (one call on every pose core) now, before the first
        frame: when no spare is left it is built, and a graph build holds the GIL
        (`PosePool.refill_spares`), which would stall a frame later."""
        if self.solo_threads > 1 and self._solo is None:
            self._start_solo_build()
            assert self._solo is not None
            await asyncio.wait([self._solo])

    def solo_ready(self) -> bool:
        """Whether the estimator for solo frames is here; starts getting it on the first ask, so
        the frames meanwhile use the lanes."""
        if self.solo_threads <= 1:
            return False
        if self._solo is None:
            self._start_solo_build()
        built = self._solo
        return built is not None and built.done() and not built.cancelled() and built.exception() is None

    def _start_solo_build(self) -> None:
        self._solo = asyncio.ensure_future(self.pose_pool.take_estimator(self.solo_threads))
        self._solo.add_done_callback(_log_failed_build)

    async def _lane_estimator(self, lane: int) -> PoseEstimator:
        assert self.lane_estimators, "open() first"
        while len(self.lane_estimators) <= lane:  # built on first use: one stream alone on a server
            self.lane_estimators.append(await self.pose_pool.take_estimator())
        return self.lane_estimators[lane]

    # ----------------------------------------------------------------- a frame

    async def pose(self, arrival: Arrival, ts: float, lane: int = 0, solo: bool = False) -> PosedFrame:
        """The frame's people: decode + pose of an image on pose lane ``lane``, or with ``solo`` on
        the estimator whose calls use every pose core (`solo_ready`; the caller holds every pose
        slot); a skeleton frame's people as the client sent them. `FrameExpired` when the frame
        waited too long for that (``SKELACT_STREAM_MAX_QUEUE_MS``)."""
        bound_s = self.settings.stream_max_queue_ms / 1e3
        if arrival.skeleton is not None:  # at its stream time: the client's, strictly increasing
            queued = _queued(arrival, bound_s)
            posed = posed_frame(arrival.skeleton, arrival.frame_id, self.model.coordinates)
            return replace(posed, timestamp=ts, queue_s=queued)
        assert arrival.image is not None
        if solo:
            assert self._solo is not None and self._solo.done(), "solo_ready() first"
            estimator = self._solo.result()
        else:
            estimator = await self._lane_estimator(lane)
        self._carry_over(estimator)
        max_side = self.settings.pose_max_side
        posed = await self.pose_pool.run(_decode_pose, estimator, arrival, ts, max_side, bound_s)
        if self._posed_by is None or ts > self._posed_by[0]:
            self._posed_by = (ts, estimator)
        return posed

    def _carry_over(self, estimator: PoseEstimator) -> None:
        """Before a frame on ``estimator``: when the stream's latest posed frame was posed on
        another of its estimators (a lane, the solo one), ``estimator`` continues from there
        (`TasksPoseEstimator.carry_from`), not from its own frames of long ago. One frame in pose
        at a time, the people found do not depend on which estimator posed a frame; with two in
        pose at once each continues from the latest frame done when it starts."""
        if self._posed_by is None or self._posed_by[1] is estimator:
            return
        if isinstance(estimator, TasksPoseEstimator):
            estimator.carry_from(self._posed_by[1])

    async def reply(
        self, arrival: Arrival, posed: PosedFrame, counters: tuple[int, int, int], t_start: float
    ) -> FrameMessage:
        """Tracking, windows, classification and the reply of a frame; call in frame order."""
        tracked = self.tracking.track(posed)
        outcome = self.tracks.observe(tracked)
        events = [e for record in outcome.ended for e in record.end_label(tracked.timestamp)]
        classify_s = 0.0
        probs = None
        if outcome.windows:
            res = await self.model.batcher.submit(stack_windows(list(outcome.windows)))
            classify_s = res.infer_ms / 1e3 + res.wait_ms / 1e3
            probs = res.probs
            events.extend(self.tracks.apply(outcome.windows, probs))
        falls = [] if self.falls is None else self.falls.update(tracked, outcome.windows, probs)
        self._update_gauges()
        now = time.perf_counter()
        timings = FrameTimings(
            decode=ms(posed.decode_s),
            pose=ms(posed.pose_s),
            track=ms(tracked.track_s),
            classify=ms(classify_s),
            total=ms(now - t_start),
            latency=ms(now - arrival.received_at),
            queue=ms(posed.queue_s),
        )
        msg = frame_message(tracked, self.tracks, self.top, events, timings, counters, falls)
        self._observe(msg)
        count_events(self.metrics, self.model.name, "stream", falls)
        return msg

    def _update_gauges(self) -> None:
        n = self.tracks.active
        self.metrics.active_tracks.inc(n - self._tracks_gauge)
        self._tracks_gauge = n

    def _observe(self, msg: FrameMessage) -> None:
        m, t = self.metrics, msg.timings_ms
        for stage_name in ("decode", "pose", "track", "classify", "total", "latency", "queue"):
            m.observe_stage(stage_name, getattr(t, stage_name) / 1e3, "stream")
        m.frames_processed.labels(source="stream").inc()
        for ev in msg.events:
            if ev.type == "start":
                m.events.labels(model=self.model.name, label=ev.label).inc()


def _stream_falls(model: LoadedModel, overrides: Mapping[str, float]) -> StreamFalls | None:
    """The stream's fall monitor for ``model`` (None without fall classes; a bad override raises)."""
    rule = rule_for(model.manifest, overrides)
    return None if rule is None else StreamFalls(rule, model.manifest.input.window.seconds)


def _log_failed_build(built: asyncio.Future[PoseEstimator]) -> None:
    """The stream keeps its lanes; say why it cannot pose solo."""
    if not built.cancelled() and built.exception() is not None:
        log.error("building the solo pose estimator failed", exc_info=built.exception())


def _decode_pose(
    estimator: PoseEstimator, arrival: Arrival, ts: float, max_side: int | None, bound_s: float
) -> PosedFrame:
    """On the pose executor: the queue wait ends here (`FrameExpired` beyond ``bound_s``)."""
    assert arrival.image is not None
    queued = _queued(arrival, bound_s)
    t0 = time.perf_counter()
    rgb = decode_image(arrival.image, max_side)
    t1 = time.perf_counter()
    poses = estimator.estimate(rgb, ts)
    t2 = time.perf_counter()
    w, h = rgb.shape[1], rgb.shape[0]
    return PosedFrame(arrival.frame_id, ts, w, h, poses, decode_s=t1 - t0, pose_s=t2 - t1, queue_s=queued)
