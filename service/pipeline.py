"""The recognition pipeline: decode -> pose -> track -> buffer -> classify -> smooth -> encode.

Stages pass small typed objects. Heavy work never runs on the event loop: decoding on an I/O
thread, pose + tracking on the shared pose pool (MediaPipe releases the GIL, so one thread per
core runs in parallel), classification on the model's micro-batcher thread. ``ClipRecognizer``
pipelines the stages over a whole video (decode of frame n+1 and classification of earlier
windows overlap pose of frame n); ``StreamSession`` runs them frame by frame for a WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace

import numpy as np

from service.batching import BatchResult
from service.buffer import TrackBuffer, Window
from service.pose import PoseEstimator, pose_estimator_for
from service.pose_slots import PoseSlots
from service.registry import LoadedModel
from service.settings import Settings
from service.smoothing import LabelEvent, LabelSmoother, SmoothedState, SmoothingConfig, TimelineBuilder
from service.tracking import TrackedPerson, Tracker, TrackHistory, TrackUpdate
from skeleton.types import PersonPose

__all__ = [
    "ClipOutcome",
    "ClipRecognizer",
    "FrameOutcome",
    "PoseTrackStage",
    "StageClock",
    "TrackSet",
    "TrackedFrame",
    "TrackedPerson",
]


# ----------------------------------------------------------------------------- timing


@dataclass
class StageClock:
    """Seconds spent per stage (summed; stages overlap in wall time)."""

    decode: float = 0.0
    pose: float = 0.0
    track: float = 0.0
    buffer: float = 0.0
    classify: float = 0.0
    encode: float = 0.0

    def as_ms(self) -> dict[str, float]:
        return {k: round(v * 1e3, 3) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------- pose + track


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """One frame after pose and tracking: who is where, and which tracks just ended."""

    index: int
    timestamp: float
    width: int
    height: int
    people: tuple[TrackedPerson, ...]
    closed: tuple[int, ...]
    pose_s: float = 0.0
    track_s: float = 0.0

    @property
    def update(self) -> TrackUpdate:
        return TrackUpdate(self.timestamp, self.people, self.closed)


class PoseTrackStage:
    """Pose estimation + tracking for one stream or clip (one MediaPipe estimator, one tracker).

    Not thread-safe: a stream or clip feeds it one frame at a time, from any pool thread.
    """

    def __init__(self, settings: Settings, estimator: PoseEstimator | None = None, pose: bool = True) -> None:
        self.settings = settings
        self.estimator = estimator
        if estimator is None and pose:
            self.estimator = pose_estimator_for(settings)
        self.tracker = Tracker()
        self._closed = False

    @classmethod
    def tracking_only(cls, settings: Settings) -> PoseTrackStage:
        """For clients that send skeletons: no pose estimator is loaded."""
        return cls(settings, pose=False)

    def track(
        self, poses: tuple[PersonPose, ...], timestamp: float, index: int, width: int, height: int
    ) -> TrackedFrame:
        t0 = time.perf_counter()
        floor = self.settings.min_pose_visibility
        if floor > 0:
            poses = tuple(p for p in poses if float(p.visibility.mean()) >= floor)
        upd = self.tracker.update(poses, timestamp, (width, height))
        return TrackedFrame(
            index, upd.timestamp_s, width, height, upd.tracks, upd.closed, 0.0, time.perf_counter() - t0
        )

    def reset(self) -> tuple[int, ...]:
        return self.tracker.reset()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.estimator is not None:
                self.estimator.close()


# ----------------------------------------------------------------------------- per-track state


@dataclass
class TrackSlot:
    """Everything the pipeline keeps for one person: buffer, smoother, history for the timeline."""

    track_id: int
    buffer: TrackBuffer
    smoother: LabelSmoother
    last_pose: PersonPose | None = None
    last_state: SmoothedState | None = None
    closed: bool = False
    window_ends: list[float] = field(default_factory=list)
    window_probs: list[np.ndarray] = field(default_factory=list)
    timeline: TimelineBuilder = field(default_factory=TimelineBuilder)


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What one frame changed: windows to classify and tracks that ended."""

    windows: tuple[Window, ...]
    closed: tuple[TrackSlot, ...]
    buffer_s: float


class TrackSet:
    """One buffer + smoother per track; a track the tracker closes is finished and (streams) freed."""

    def __init__(
        self, model: LoadedModel, smoothing: SmoothingConfig, stride: int | None, keep_history: bool
    ) -> None:
        self.model = model
        self.smoothing = smoothing
        self.stride = stride
        self.keep_history = keep_history
        self.slots: dict[int, TrackSlot] = {}
        self.finished: dict[int, TrackSlot] = {}

    @property
    def active(self) -> int:
        return len(self.slots)

    def observe(self, frame: TrackedFrame) -> FrameOutcome:
        """Push this frame's poses into their tracks' buffers; return the windows now due."""
        t0 = time.perf_counter()
        seen: set[int] = set()
        for person in frame.people:
            slot = self.slots.get(person.track_id)
            if slot is None:
                slot = self._new_slot(person.track_id)
            slot.buffer.push(frame.timestamp, person.pose, frame.height)
            slot.last_pose = person.pose
            seen.add(person.track_id)
        for tid, slot in self.slots.items():
            if tid not in seen:
                slot.buffer.push(frame.timestamp, None, frame.height)
        windows: list[Window] = []
        for slot in self.slots.values():
            windows.extend(slot.buffer.cut(slot.buffer.due()))
        closed: list[TrackSlot] = []
        for tid in frame.closed:
            slot = self.slots.pop(tid, None)
            if slot is None:
                continue
            slot.closed = True
            closed.append(slot)
            if self.keep_history:  # a clip keeps it for the timeline; a short one still gets a window
                windows.extend(slot.buffer.cut(slot.buffer.flush()))
                self.finished[tid] = slot
        return FrameOutcome(tuple(windows), tuple(closed), time.perf_counter() - t0)

    def flush(self) -> list[Window]:
        """End of a clip: short tracks get their one window."""
        out: list[Window] = []
        for slot in self.slots.values():
            out.extend(slot.buffer.cut(slot.buffer.flush()))
        return out

    def slot(self, track_id: int) -> TrackSlot | None:
        return self.slots.get(track_id) or self.finished.get(track_id)

    def all_slots(self) -> list[TrackSlot]:
        return sorted([*self.finished.values(), *self.slots.values()], key=lambda s: s.track_id)

    def apply(
        self, windows: tuple[Window, ...] | list[Window], probs: np.ndarray
    ) -> list[tuple[int, LabelEvent]]:
        """Feed classified windows (in time order) to their tracks' smoothers; return new events."""
        events: list[tuple[int, LabelEvent]] = []
        for w, p in zip(windows, probs, strict=True):
            slot = self.slot(w.track_id)
            if slot is None:
                continue
            state = slot.smoother.update(p, w.end_time)
            slot.last_state = state
            if self.keep_history:
                slot.window_ends.append(w.end_time)
                slot.window_probs.append(p)
                # a label found in the first window was there since the window started
                first = len(slot.window_ends) == 1
                slot.timeline.add(state, segment_start=w.start_time if first else None)
            events.extend((w.track_id, e) for e in state.events)
        return events

    def finish(self, slot: TrackSlot, time_s: float) -> list[LabelEvent]:
        """Close a track's active label (stream: the track ended)."""
        return list(slot.smoother.finish(time_s))

    def _new_slot(self, track_id: int) -> TrackSlot:
        buf = TrackBuffer(track_id, self.model.manifest.input, self.stride, keep_all=self.keep_history)
        slot = TrackSlot(track_id, buf, LabelSmoother(self.model.labels, self.smoothing))
        self.slots[track_id] = slot
        return slot


def smoothing_config(settings: Settings) -> SmoothingConfig:
    return SmoothingConfig(
        settings.ema_alpha, settings.enter_threshold, settings.exit_threshold, settings.switch_margin
    )


def stack(windows: tuple[Window, ...] | list[Window]) -> np.ndarray:
    return np.stack([w.tensor for w in windows])


# ----------------------------------------------------------------------------- clips


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """A decoded frame (RGB) or a frame of client skeletons (``people`` set, ``rgb`` None)."""

    index: int
    timestamp: float
    width: int
    height: int
    rgb: np.ndarray | None
    people: tuple[TrackedPerson, ...] | None = None  # client skeletons with their own track ids
    poses: tuple[PersonPose, ...] | None = None  # client skeletons for the server's tracker
    decode_s: float = 0.0


@dataclass
class ClipOutcome:
    """Everything a clip produced, before encoding into a response."""

    tracks: TrackSet
    frames_decoded: int
    frames_processed: int
    windows: int
    batch_ids: set[int]
    clock: StageClock
    wall_s: float
    frame_people: list[tuple[float, tuple[TrackedPerson, ...]]]  # for the overlay
    last_time: float
    history: TrackHistory
    width: int
    height: int
    pose_lanes: int = 1  # estimators the frames were spread over


async def prefetch(
    source: Iterator[SourceFrame], executor: Executor, depth: int = 4
) -> AsyncIterator[SourceFrame]:
    """Pull frames from a blocking iterator on ``executor``, ``depth`` frames ahead of the consumer.

    The source is closed under the same lock as each pull: a cancelled request (a timeout) stops
    waiting for the pull in flight, and closing a video capture while a thread reads from it
    crashes the process (seen in the suite: a segfault in OpenCV's read).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[SourceFrame | BaseException | None] = asyncio.Queue(maxsize=depth)
    sentinel = object()
    lock = threading.Lock()
    closed = False

    def pull() -> SourceFrame | object:
        with lock:
            return sentinel if closed else next(source, sentinel)

    def close_source() -> None:
        nonlocal closed
        with lock:
            closed = True
            close = getattr(source, "close", None)
            if close is not None:
                close()

    async def produce() -> None:
        try:
            while True:
                item = await loop.run_in_executor(executor, pull)
                if item is sentinel:
                    break
                assert isinstance(item, SourceFrame)
                await queue.put(item)
        except BaseException as exc:  # hand decode errors to the consumer
            await queue.put(exc)
            return
        await queue.put(None)

    task = loop.create_task(produce())
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        await loop.run_in_executor(executor, close_source)


def _timed_estimate(
    estimator: PoseEstimator, rgb: np.ndarray, timestamp: float
) -> tuple[tuple[PersonPose, ...], float]:
    t0 = time.perf_counter()
    return estimator.estimate(rgb, timestamp), time.perf_counter() - t0


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from any thread; nothing once the loop is closed (shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


class ClipRecognizer:
    """Runs one clip through the pipeline with the stages overlapping.

    ``extra_estimators``: pose lanes beyond the stage's own estimator. Frame i goes to lane
    i mod lanes, so several frames are in pose at once; tracking and windows still see the
    frames in order. ``slots``: the server's pose slots (service.pose_slots); each frame's pose
    call holds one, so a clip never poses beside a stream's solo frame.
    """

    def __init__(
        self,
        model: LoadedModel,
        settings: Settings,
        pose_pool: Executor,
        io_pool: Executor,
        stride: int | None = None,
        keep_frames: bool = False,
        extra_estimators: Sequence[PoseEstimator] = (),
        slots: PoseSlots | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.pose_pool = pose_pool
        self.io_pool = io_pool
        self.stride = stride or settings.stride
        self.keep_frames = keep_frames
        self.extra_estimators = tuple(extra_estimators)
        self.slots = slots

    async def run(self, source: Iterator[SourceFrame], stage: PoseTrackStage | None) -> ClipOutcome:
        with self.model.batcher.producing():
            return await self._run(source, stage)

    async def _run(self, source: Iterator[SourceFrame], stage: PoseTrackStage | None) -> ClipOutcome:
        loop = asyncio.get_running_loop()
        t_start = time.perf_counter()
        tracks = TrackSet(self.model, smoothing_config(self.settings), self.stride, keep_history=True)
        clock = StageClock()
        pending: list[tuple[list[Window], asyncio.Task[BatchResult]]] = []
        frame_people: list[tuple[float, tuple[TrackedPerson, ...]]] = []
        decoded = processed = width = height = 0
        last_time = 0.0
        history = TrackHistory()

        def submit(windows: list[Window]) -> None:
            if windows:
                task = loop.create_task(self.model.batcher.submit(stack(windows)))
                pending.append((windows, task))

        def consume(src: SourceFrame, tracked: TrackedFrame) -> None:
            nonlocal processed, width, height, last_time
            processed += 1
            width, height = src.width, src.height
            history.add(tracked.update)
            clock.pose += tracked.pose_s
            clock.track += tracked.track_s
            last_time = src.timestamp
            if self.keep_frames:
                frame_people.append((src.timestamp, tracked.people))
            outcome = tracks.observe(tracked)
            clock.buffer += outcome.buffer_s
            submit(list(outcome.windows))

        lanes = (stage.estimator, *self.extra_estimators) if stage is not None and stage.estimator else ()
        # frames in pose, oldest first; a frame leaves only once its pose job is done, so a cancelled
        # request can wait here for the jobs still running before its estimators are closed
        in_pose: deque[tuple[SourceFrame, Future[tuple[tuple[PersonPose, ...], float]]]] = deque()

        async def pose_on_lane(lane: PoseEstimator, src: SourceFrame) -> None:
            assert src.rgb is not None
            slots = self.slots
            if slots is not None:
                await slots.take()
            job = self.pose_pool.submit(_timed_estimate, lane, src.rgb, src.timestamp)
            if slots is not None:  # given back when the call ends (or is cancelled before it runs)
                job.add_done_callback(lambda _: _on_loop(loop, slots.give))
            in_pose.append((src, job))

        async def oldest_posed() -> None:
            src, job = in_pose[0]
            poses, pose_s = await asyncio.wrap_future(job)
            in_pose.popleft()
            assert stage is not None
            t = stage.track(poses, src.timestamp, src.index, src.width, src.height)
            consume(src, replace(t, pose_s=pose_s))

        try:
            async for src in prefetch(source, self.io_pool):
                decoded += 1
                clock.decode += src.decode_s
                if src.rgb is not None:
                    if not lanes:
                        raise RuntimeError("this stage was built for skeleton input only")
                    await pose_on_lane(lanes[(decoded - 1) % len(lanes)], src)
                    if len(in_pose) == len(lanes):  # every lane busy: the oldest frame goes on first
                        await oldest_posed()
                    continue
                if src.people is not None:
                    tracked = TrackedFrame(src.index, src.timestamp, src.width, src.height, src.people, ())
                else:
                    assert stage is not None and src.poses is not None
                    tracked = stage.track(src.poses, src.timestamp, src.index, src.width, src.height)
                consume(src, tracked)
            while in_pose:
                await oldest_posed()
            t0 = time.perf_counter()
            submit(tracks.flush())
            clock.buffer += time.perf_counter() - t0
            results = await asyncio.gather(*(t for _, t in pending))
        finally:
            for _, t in pending:
                t.cancel()
            busy = [job for _, job in in_pose if not job.cancel()]  # running ones cannot be cancelled
            if busy:  # the caller closes the estimators next, never mid-frame
                await asyncio.wait([asyncio.wrap_future(job) for job in busy])
        batch_ids: set[int] = set()
        infer: dict[int, float] = {}
        for (windows, _), res in zip(pending, results, strict=True):
            tracks.apply(windows, res.probs)
            batch_ids.add(res.batch_id)
            infer[res.batch_id] = res.infer_ms
        clock.classify = sum(infer.values()) / 1e3
        n_windows = sum(len(w) for w, _ in pending)
        for slot in tracks.all_slots():
            slot.timeline.finish(slot.buffer.last_seen if slot.buffer.last_seen is not None else last_time)
        return ClipOutcome(
            tracks,
            decoded,
            processed,
            n_windows,
            batch_ids,
            clock,
            time.perf_counter() - t_start,
            frame_people,
            last_time,
            history,
            width,
            height,
            max(1, len(lanes)),
        )
