"""One clip through the pipeline: decode -> pose -> track -> buffer -> classify, stages overlapping.

Heavy work never runs on the event loop: decoding on an I/O thread a few frames ahead
(`source.prefetch`), pose on the pose executor (one estimator per pose lane, frame i on lane
i mod lanes), classification on the model's micro-batcher thread while later frames are still in
pose. Tracking, windows and smoothing see the frames in order. `ClipJob` is shared by the HTTP
route and the offline CLI, so both give the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.pose.estimator import PoseEstimator
from perception.tracking.clip_tracks import TrackHistory
from perception.video import VideoDecodeError
from service.batching import BatchResult
from service.buffer import TrackWindow
from service.clips.result import clip_people, decide_clip, too_short
from service.clips.source import ClipFrame, ImageFrame, VideoSource, check_video, prefetch, undecodable
from service.falls import count_events, rule_for
from service.frames import FrameTracking, PosedFrame, TrackedPerson
from service.jobs import Progress
from service.overlay import render_overlay
from service.registry import LoadedModel
from service.schemas import RecognizeResponse, SkeletonSequenceIn, VideoInfo
from service.skeleton_input import sequence_frames
from service.smoothing import smoothing_config
from service.state import ServiceState
from service.tracks import TrackSet, stack_windows
from service.wire import ClipStats, frames_out, recognize_response
from skeleton.falls import clip_events
from skeleton.types import PersonPose

__all__ = ["ClipJob", "ClipOutcome", "StageClock"]


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


@dataclass
class ClipOutcome:
    """Everything a clip's pass produced, before its people are assembled and encoded."""

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


class ClipJob:
    """Recognise one clip with ``model``: per-person timelines, the primary person, the clip label."""

    def __init__(
        self,
        state: ServiceState,
        model: LoadedModel,
        top_k: int | None = None,
        stride: int | None = None,
        progress: Progress | None = None,
        fall_overrides: Mapping[str, float] | None = None,
        frames: str = "none",
    ) -> None:
        self.state = state
        self.model = model
        self.top_k = top_k or state.settings.top_k
        self.stride = stride or state.settings.stride
        # validated here, before any work: a bad override is a 422 (service.falls.rule_for)
        self.fall_rule = rule_for(model.manifest, fall_overrides)
        self.progress = progress  # told (frames done, frames in the clip) as frames leave tracking
        self._frames_total: int | None = None
        self.frames = frames  # per-frame people in the response: "none", "boxes" or "landmarks"

    async def video(self, path: Path, filename: str, overlay_path: Path | None = None) -> RecognizeResponse:
        s = self.state.settings
        loop = asyncio.get_running_loop()
        outcome, info = await self.video_pass(path, filename, keep_frames=overlay_path is not None)
        warnings = []
        if info.frames and outcome.frames_decoded < 0.9 * info.frames - 1:
            warnings.append(
                f"decoded {outcome.frames_decoded} of {info.frames} declared frames: the file looks truncated"
            )
        video = info.model_copy(update={"frames": outcome.frames_decoded})
        t0 = time.perf_counter()
        response = await self._respond(outcome, "video", video, warnings)
        if overlay_path is not None:
            t_overlay = time.perf_counter()
            await loop.run_in_executor(
                self.state.io_pool,
                render_overlay,
                path,
                overlay_path,
                outcome.frame_people,
                response,
                s.pose_max_side,
            )
            response.stats.overlay_s = round(time.perf_counter() - t_overlay, 3)
        return self._done(response, outcome, t0)

    async def video_pass(
        self, path: Path, filename: str, keep_frames: bool = False, until_s: float | None = None
    ) -> tuple[ClipOutcome, VideoInfo]:
        """The video's pass (checked, decoded, posed, tracked, windows classified), not yet
        answered; ``until_s``: only the frames up to that time."""
        s = self.state.settings
        pose = self.state.pose
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(
            self.state.io_pool, check_video, path, filename, s.max_video_seconds, s.max_frame_side
        )
        self._frames_total = info.frames or round(info.duration_s * info.fps) or None
        async with self.state.clip_admission, pose.clip_in_pose():
            lanes = s.clip_lanes(info.fps)
            estimators = list(await asyncio.gather(*(pose.take_estimator() for _ in range(lanes))))
            try:
                source = await loop.run_in_executor(
                    self.state.io_pool, VideoSource, path, s.pose_max_side, s.max_video_seconds, until_s
                )
                try:
                    outcome = await self._pass(source, tuple(estimators), keep_frames=keep_frames)
                except VideoDecodeError as exc:
                    hint = "re-encode the video (e.g. ffmpeg -i in.x -c:v libx264 out.mp4)"
                    raise undecodable(filename, exc, hint) from None
            finally:
                await pose.close_estimators(estimators)
        short = too_short(filename, outcome.frames_decoded, info.fps, self.model)
        if short is not None:
            raise short
        return outcome, info

    async def skeletons(self, seq: SkeletonSequenceIn) -> RecognizeResponse:
        outcome = await self.skeletons_pass(seq)
        warnings = []
        if self.fall_rule is not None and all(p.image is None for f in seq.frames for p in f.people):
            warnings.append("no 'image' landmarks: falls cannot be confirmed without them (docs/api.md)")
        t0 = time.perf_counter()
        response = await self._respond(outcome, "skeleton", None, warnings)
        return self._done(response, outcome, t0)

    async def skeletons_pass(self, seq: SkeletonSequenceIn) -> ClipOutcome:
        """The skeleton sequence's pass (tracked, windows classified), not yet answered."""
        source = sequence_frames(seq, self.model.coordinates)
        first = next(source)  # validate eagerly: errors become a 422 before any work starts

        def frames() -> Iterator[ClipFrame]:
            yield first
            yield from source

        self._frames_total = len(seq.frames)
        async with self.state.clip_admission:
            return await self._pass(frames(), (), keep_frames=False)

    async def _respond(
        self, outcome: ClipOutcome, source: str, video: VideoInfo | None, warnings: list[str]
    ) -> RecognizeResponse:
        people, primary = await clip_people(self.model, outcome, self.state.settings, self.stride)
        falls = []
        if self.fall_rule is not None:
            window_s = self.model.manifest.input.window.seconds
            falls = clip_events(
                self.fall_rule,
                ((p.track_id, p.sequence, p.window_ends, p.window_probs) for p in people),
                window_s,
                outcome.width,
                outcome.height,
            )
            count_events(self.state.metrics, self.model.name, "clip", falls)
        chosen = next((p for p in people if p.track_id == primary and len(p.window_probs)), None)
        decision = None if chosen is None else decide_clip(self.model, chosen, self.fall_rule, falls)
        if not people:
            warnings.append("nobody was detected: check that people are fully visible and well lit")
        stats = ClipStats(
            outcome.frames_decoded,
            outcome.frames_processed,
            outcome.windows,
            len(outcome.batch_ids),
            outcome.wall_s,
            outcome.pose_lanes,
            outcome.clock.as_ms(),
        )
        response = recognize_response(
            self.model,
            people,
            primary,
            decision,
            source,
            video,
            stats,
            self.top_k,
            self.stride,
            warnings,
            falls,
            self.fall_rule,
        )
        if self.frames != "none":
            scale = outcome.width / video.width if video is not None and video.width else 1.0
            size = (outcome.width, outcome.height)
            landmarks = self.frames == "landmarks"
            response.frames = frames_out(people, outcome.history.timestamps, size, scale, landmarks)
        return response

    def _done(self, response: RecognizeResponse, outcome: ClipOutcome, t0: float) -> RecognizeResponse:
        """Time the encoding (annotated video included), make ``wall_s`` the whole job's time, and
        count the clip in the metrics."""
        encode_s = time.perf_counter() - t0
        response.stats.stage_ms.encode = round(encode_s * 1e3, 3)
        stats = response.stats
        stats.wall_s = round(outcome.wall_s + encode_s, 3)
        stats.fps_processed = round(stats.frames_processed / max(stats.wall_s, 1e-9), 2)
        m = self.state.metrics
        m.frames_processed.labels(source="clip").inc(outcome.frames_processed)
        m.frames_received.labels(source="clip").inc(outcome.frames_decoded)
        n = max(outcome.frames_processed, 1)
        for name, stage_ms in response.stats.stage_ms.model_dump().items():
            per = stage_ms / 1e3 if name in ("encode", "classify") else stage_ms / 1e3 / n
            m.observe_stage(name, per, "clip")
        return response

    async def _pass(
        self, source: Iterator[ClipFrame], lanes: tuple[PoseEstimator, ...], keep_frames: bool
    ) -> ClipOutcome:
        with self.model.batcher.producing():
            return await self._run(source, lanes, keep_frames)

    async def _run(
        self, source: Iterator[ClipFrame], lanes: tuple[PoseEstimator, ...], keep_frames: bool
    ) -> ClipOutcome:
        """Frame i of a video goes to pose lane i mod lanes, so several frames are in pose at once;
        each pose call holds one pose slot, so a clip never poses beside a stream's solo frame."""
        loop = asyncio.get_running_loop()
        t_start = time.perf_counter()
        s = self.state.settings
        slots = self.state.pose.slots
        tracking = FrameTracking(s.min_pose_visibility, s.track_confirm_s)
        tracks = TrackSet(self.model, smoothing_config(s), self.stride, keep_history=True)
        clock = StageClock()
        pending: list[tuple[list[TrackWindow], asyncio.Task[BatchResult]]] = []
        frame_people: list[tuple[float, tuple[TrackedPerson, ...]]] = []
        decoded = processed = width = height = 0
        last_time = 0.0
        history = TrackHistory()
        if self.progress is not None:  # the pass has its place: the clip is running
            self.progress(0, self._frames_total)

        def submit(windows: list[TrackWindow]) -> None:
            if windows:
                task = loop.create_task(self.model.batcher.submit(stack_windows(windows)))
                pending.append((windows, task))

        def consume(frame: PosedFrame) -> None:
            nonlocal processed, width, height, last_time
            tracked = tracking.track(frame)
            processed += 1
            width, height = frame.width, frame.height
            history.add(tracked.update)
            clock.pose += frame.pose_s
            clock.track += tracked.track_s
            last_time = frame.timestamp
            if keep_frames:
                frame_people.append((frame.timestamp, tracked.people))
            if self.progress is not None:
                self.progress(processed, self._frames_total)
            outcome = tracks.observe(tracked)
            clock.buffer += outcome.buffer_s
            submit(list(outcome.windows))

        # frames in pose, oldest first; a frame leaves only once its pose job is done, so a cancelled
        # request can wait here for the jobs still running before its estimators are closed
        in_pose: deque[tuple[ImageFrame, Future[tuple[tuple[PersonPose, ...], float]]]] = deque()

        async def pose_on_lane(lane: PoseEstimator, src: ImageFrame) -> None:
            # frame i on lane i mod lanes, tracked in order: perception.pose.lanes.run_lanes's order,
            # which offline extraction reproduces
            await slots.take()
            job = self.state.pose.executor.submit(_timed_estimate, lane, src.rgb, src.timestamp)
            # the slot is given back when the call ends (or is cancelled before it runs)
            job.add_done_callback(lambda _: _on_loop(loop, slots.give))
            in_pose.append((src, job))

        async def oldest_posed() -> None:
            src, job = in_pose[0]
            poses, pose_s = await asyncio.wrap_future(job)
            in_pose.popleft()
            consume(PosedFrame(src.index, src.timestamp, src.width, src.height, poses, pose_s=pose_s))

        try:
            async for src in prefetch(source, self.state.io_pool):
                decoded += 1
                clock.decode += src.decode_s
                if isinstance(src, PosedFrame):
                    consume(src)
                    continue
                if not lanes:
                    raise RuntimeError("this clip was started for skeleton input only")
                await pose_on_lane(lanes[(decoded - 1) % len(lanes)], src)
                if len(in_pose) == len(lanes):  # every lane busy: the oldest frame goes on first
                    await oldest_posed()
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
        for record in tracks.all_records():
            last = record.buffer.last_seen
            record.timeline.end(last if last is not None else last_time)
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


def _timed_estimate(
    estimator: PoseEstimator, rgb: np.ndarray, timestamp: float
) -> tuple[tuple[PersonPose, ...], float]:
    t0 = time.perf_counter()
    return estimator.estimate(rgb, timestamp), time.perf_counter() - t0


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from any thread; nothing once the loop is closed (shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
