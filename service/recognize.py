"""Whole-clip recognition (POST /recognize and ``python -m service recognize``).

Runs the clip through ``ClipRecognizer``, picks the primary person exactly like the offline
extraction does (``service.tracking.select_primary_track`` over tracks seen in at least
``MIN_TRACK_FRAMES`` frames), decides the clip label with ``skeleton.clip`` (the offline
evaluation's rule) and encodes the response; optionally renders an annotated video.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.buffer import WindowSpecView, window_view
from service.errors import ServiceError
from service.overlay import OverlayPerson, OverlayWriter, draw
from service.pipeline import ClipOutcome, ClipRecognizer, PoseTrackStage, SourceFrame, smoothing_config
from service.registry import LoadedModel
from service.schemas import (
    ClipResult,
    ProcessingStats,
    RecognizeResponse,
    Segment,
    SkeletonSequenceIn,
    StageTimes,
    TrackResult,
    VideoInfo,
    top_scores,
)
from service.skeleton_input import sequence_source
from service.smoothing import TimelineSegment, timeline
from service.state import ServiceState
from service.tracking import select_primary_track, stitch_tracks
from service.video import VideoDecodeError, VideoReader, probe_video
from skeleton.clip import ClipDecision, ClipRule, decide, window_ends
from skeleton.manifest import ModelManifest
from skeleton.preprocess import prepare_window, sequence_to_layout
from skeleton.types import SkeletonSequence

# Same as training.extract's default: shorter tracks are detector blips, not people.
MIN_TRACK_FRAMES = 3


def clip_rule(manifest: ModelManifest) -> ClipRule:
    """The manifest's clip rule (fall classes, threshold), as the offline evaluation builds it."""
    return ClipRule.from_manifest(manifest)


def decide_clip(manifest: ModelManifest, window_probs: np.ndarray, window_ends: np.ndarray) -> ClipDecision:
    """The offline evaluation's clip decision (``skeleton.clip.decide``) on one track's windows."""
    return decide(window_probs, window_ends, clip_rule(manifest))


@dataclass
class FinalTrack:
    """One person of a finished clip (possibly several online tracks joined)."""

    track_id: int
    members: tuple[int, ...]
    first_seen: float
    last_seen: float
    frames: int
    window_ends: np.ndarray  # (W,)
    window_probs: np.ndarray  # (W, K)
    segments: list[TimelineSegment]


class VideoSource:
    """Decoded frames of a video file with per-frame decode time (iterated on an I/O thread)."""

    def __init__(self, path: Path, max_side: int | None = None, max_seconds: float | None = None) -> None:
        self.reader = VideoReader(path, max_side=max_side, allow_truncated=True)
        self._it = iter(self.reader)
        self.max_seconds = max_seconds  # containers may not declare (or may understate) their length

    def __iter__(self) -> Iterator[SourceFrame]:
        return self

    def __next__(self) -> SourceFrame:
        t0 = time.perf_counter()
        f = next(self._it)
        if self.max_seconds is not None and f.timestamp_s > self.max_seconds:
            raise _too_long(f"the video runs past {self.max_seconds:.0f} s", self.max_seconds)
        return SourceFrame(
            f.index, f.timestamp_s, f.width, f.height, f.rgb, decode_s=time.perf_counter() - t0
        )

    def close(self) -> None:
        self.reader.close()


def _too_long(what: str, max_seconds: float) -> ServiceError:
    return ServiceError(
        413,
        "video_too_long",
        f"{what}, the limit is {max_seconds:.0f} s",
        "cut the video or raise SKELACT_MAX_VIDEO_SECONDS",
    )


def check_video(path: Path, filename: str, max_seconds: float, max_side: int | None = None) -> VideoInfo:
    try:
        info = probe_video(path)
    except VideoDecodeError as exc:
        raise ServiceError(
            422,
            "undecodable_video",
            f"{filename}: {exc.reason}",
            "send an mp4/avi/webm/mov file that a video player can open",
        ) from None
    if info.duration_s > max_seconds:
        raise _too_long(f"{filename} lasts {info.duration_s:.0f} s", max_seconds)
    if max_side is not None and max(info.width, info.height) > max_side:
        raise ServiceError(  # refused before a decoder allocates frames of that size
            413,
            "video_too_large",
            f"{filename} is {info.width}x{info.height} pixels, the limit is {max_side} px per side",
            "downscale the video (e.g. ffmpeg -vf scale=1280:-2) or raise SKELACT_MAX_FRAME_SIDE",
        )
    return VideoInfo(
        filename=filename,
        width=info.width,
        height=info.height,
        fps=round(info.fps, 3),
        frames=info.frame_count,
        duration_s=round(info.duration_s, 3),
    )


class ClipService:
    """Shared by the HTTP route and the offline CLI, so both give the same answer."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    async def video(
        self,
        path: Path,
        filename: str,
        model: LoadedModel,
        top_k: int | None = None,
        stride: int | None = None,
        overlay_path: Path | None = None,
    ) -> RecognizeResponse:
        s = self.state.settings
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(
            self.state.io_pool, check_video, path, filename, s.max_video_seconds, s.max_frame_side
        )
        async with self.state.clip_slots, self.state.clip_in_pose():
            lanes = max(1, min(s.clip_pose_lanes, s.pose_workers))
            stage, *extra = await asyncio.gather(*(self.state.take_pose_stage() for _ in range(lanes)))
            try:
                source = await loop.run_in_executor(
                    self.state.io_pool, VideoSource, path, s.pose_max_side, s.max_video_seconds
                )
                rec = ClipRecognizer(
                    model,
                    s,
                    self.state.pose_pool,
                    self.state.io_pool,
                    stride,
                    keep_frames=overlay_path is not None,
                    extra_estimators=[e.estimator for e in extra if e.estimator is not None],
                    slots=self.state.pose_slots,
                )
                try:
                    outcome = await rec.run(source, stage)
                except VideoDecodeError as exc:
                    raise ServiceError(
                        422,
                        "undecodable_video",
                        f"{filename}: {exc.reason}",
                        "re-encode the video (e.g. ffmpeg -i in.x -c:v libx264 out.mp4)",
                    ) from None
            finally:
                for done in (stage, *extra):
                    await loop.run_in_executor(self.state.pose_pool, done.close)
        warnings = []
        if info.frames and outcome.frames_decoded < 0.9 * info.frames - 1:
            warnings.append(
                f"decoded {outcome.frames_decoded} of {info.frames} declared frames: the file looks truncated"
            )
        video = info.model_copy(update={"frames": outcome.frames_decoded})
        t0 = time.perf_counter()
        final, primary = await self._final_tracks(model, outcome, stride)
        response = self._encode(model, outcome, final, primary, "video", video, top_k, stride, warnings)
        if overlay_path is not None:
            await loop.run_in_executor(
                self.state.io_pool,
                render_overlay,
                path,
                overlay_path,
                outcome,
                response,
                model,
                s.pose_max_side,
            )
        response.stats.stage_ms.encode = round((time.perf_counter() - t0) * 1e3, 3)
        self._observe(outcome, response)
        return response

    async def skeletons(
        self, seq: SkeletonSequenceIn, model: LoadedModel, top_k: int | None = None, stride: int | None = None
    ) -> RecognizeResponse:
        s = self.state.settings
        source = sequence_source(seq, model.manifest.input.coordinates)
        first = next(source)  # validate eagerly: errors become a 422 before any work starts

        def frames() -> Iterator[SourceFrame]:
            yield first
            yield from source

        stage = PoseTrackStage.tracking_only(s)
        async with self.state.clip_slots:
            outcome = await ClipRecognizer(model, s, self.state.pose_pool, self.state.io_pool, stride).run(
                frames(), stage
            )
        t0 = time.perf_counter()
        final, primary = await self._final_tracks(model, outcome, stride)
        response = self._encode(model, outcome, final, primary, "skeleton", None, top_k, stride, [])
        response.stats.stage_ms.encode = round((time.perf_counter() - t0) * 1e3, 3)
        self._observe(outcome, response)
        return response

    def _observe(self, outcome: ClipOutcome, response: RecognizeResponse) -> None:
        m = self.state.metrics
        m.frames_processed.labels(source="clip").inc(outcome.frames_processed)
        m.frames_received.labels(source="clip").inc(outcome.frames_decoded)
        n = max(outcome.frames_processed, 1)
        for name, ms in response.stats.stage_ms.model_dump().items():
            per = ms / 1e3 if name in ("encode", "classify") else ms / 1e3 / n
            m.observe_stage(name, per, "clip")

    async def _final_tracks(
        self, model: LoadedModel, outcome: ClipOutcome, stride: int | None
    ) -> tuple[list[FinalTrack], int | None]:
        """The clip's people as the offline extraction sees them: blips dropped, fragments of one
        person stitched, the primary chosen. A stitched person's windows are recomputed over the
        joined sequence; everyone else keeps the windows classified during the pass."""
        history = outcome.history
        sequences = history.sequences(min_frames=MIN_TRACK_FRAMES)
        if not sequences:
            return [], None
        if self.state.settings.stitch_tracks:
            joined, members = stitch_tracks(sequences, frame_size=(outcome.width, outcome.height))
        else:
            joined, members = dict(sequences), {i: (i,) for i in sequences}
        ids = sorted(joined)
        idx = select_primary_track(
            [joined[i] for i in ids],
            frame_height=float(outcome.height) or None,
            clip_frames=len(history),
            frame_width=float(outcome.width) or None,
        )
        primary = None if idx is None else ids[idx]
        smoothing = smoothing_config(self.state.settings)
        view = window_view(model.manifest.input, stride or self.state.settings.stride)
        out = []
        for tid in ids:
            seq, parts = joined[tid], tuple(members[tid])
            seen = np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))
            t_seen = seq.timestamps[seen]
            slot = outcome.tracks.slot(tid) if len(parts) == 1 else None
            if slot is not None:
                ends = np.asarray(slot.window_ends, np.float64)
                probs = np.stack(slot.window_probs) if slot.window_probs else np.zeros((0, len(model.labels)))
                segments = list(slot.timeline.segments)
            else:
                ends, probs = await self._classify_sequence(model, seq, seen, outcome.height, view)
                segments = timeline(model.labels, smoothing, ends, probs, view.seconds, float(t_seen[-1]))
            out.append(
                FinalTrack(
                    tid, parts, float(t_seen[0]), float(t_seen[-1]), int(seen.sum()), ends, probs, segments
                )
            )
        return out, primary

    @staticmethod
    async def _classify_sequence(
        model: LoadedModel, seq: SkeletonSequence, seen: np.ndarray, height: int, view: WindowSpecView
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = model.manifest.input
        joints = sequence_to_layout(seq, spec, float(height))
        t = seq.timestamps
        ends = window_ends(float(t[seen][0]), float(t[seen][-1]), view.seconds, view.hop_s)
        windows = np.stack([prepare_window(t, joints, spec, float(e)) for e in ends])
        return ends, (await model.batcher.submit(windows)).probs

    def _encode(
        self,
        model: LoadedModel,
        outcome: ClipOutcome,
        final: list[FinalTrack],
        primary: int | None,
        source: str,
        video: VideoInfo | None,
        top_k: int | None,
        stride: int | None,
        warnings: list[str],
    ) -> RecognizeResponse:
        k = top_k or self.state.settings.top_k
        labels = model.labels
        tracks: list[TrackResult] = []
        clip: ClipResult | None = None
        for ft in final:
            tracks.append(self._track_result(ft, labels, k, ft.track_id == primary))
            if ft.track_id == primary and len(ft.window_probs):
                d = decide_clip(model.manifest, ft.window_probs, ft.window_ends)
                clip = ClipResult(
                    track_id=ft.track_id,
                    label=labels[d.label],
                    confidence=round(d.confidence, 4),
                    top=top_scores(labels, d.probs, k),
                    fall=d.fall,
                    fall_time=None if d.fall_time is None else round(d.fall_time, 4),
                    fall_probability=round(d.fall_probability, 4),
                )
        if not final:
            warnings.append("nobody was detected: check that people are fully visible and well lit")
        c = outcome.clock.as_ms()
        return RecognizeResponse(
            model=model.name,
            provider=model.runtime.provider,
            source=source,  # type: ignore[arg-type]
            video=video,
            window=model.window_info(stride or self.state.settings.stride),
            tracks=tracks,
            primary_track_id=primary,
            clip=clip,
            stats=ProcessingStats(
                frames_decoded=outcome.frames_decoded,
                frames_processed=outcome.frames_processed,
                windows=outcome.windows,
                batches=len(outcome.batch_ids),
                wall_s=round(outcome.wall_s, 3),
                fps_processed=round(outcome.frames_processed / max(outcome.wall_s, 1e-9), 2),
                pose_lanes=outcome.pose_lanes,
                stage_ms=StageTimes(**c),
            ),
            warnings=warnings,
        )

    @staticmethod
    def _track_result(ft: FinalTrack, labels: list[str], k: int, primary: bool) -> TrackResult:
        mean = ft.window_probs.mean(axis=0) if len(ft.window_probs) else None
        return TrackResult(
            track_id=ft.track_id,
            members=list(ft.members),
            primary=primary,
            first_seen=round(ft.first_seen, 4),
            last_seen=round(ft.last_seen, 4),
            frames=ft.frames,
            windows=len(ft.window_probs),
            segments=[
                Segment(
                    start=round(sg.start, 4),
                    end=round(sg.end, 4),
                    label=sg.label,
                    confidence=round(sg.confidence, 4),
                )
                for sg in ft.segments
            ],
            top=top_scores(labels, mean, k),
        )


def _label_at(segments: list[Segment], t: float) -> tuple[str, float] | None:
    for sg in segments:
        if sg.start <= t <= sg.end:
            return sg.label, sg.confidence
    return None


def render_overlay(
    video: Path,
    out: Path,
    outcome: ClipOutcome,
    response: RecognizeResponse,
    model: LoadedModel,
    max_side: int | None = None,
) -> None:
    """Decode the video again and draw every frame's people with their label at that time."""
    segs = {t.track_id: t.segments for t in response.tracks}
    person = {m: t.track_id for t in response.tracks for m in (t.members or [t.track_id])}
    primary = response.primary_track_id
    reader = VideoReader(video, max_side=max_side, allow_truncated=True)
    writer: OverlayWriter | None = None
    try:
        for frame, (_, people) in zip(reader, outcome.frame_people, strict=False):
            if writer is None:
                writer = OverlayWriter(out, reader.info.fps or 25.0, (frame.width, frame.height))
            drawn = []
            for p in people:
                tid = person.get(p.track_id)
                if tid is None:
                    continue
                hit = _label_at(segs[tid], frame.timestamp_s)
                caption = f"#{tid} " + (f"{hit[0]} {hit[1]:.2f}" if hit else "…")
                lm = np.concatenate([p.pose.image[:, :2], p.pose.visibility[:, None]], axis=1)
                b = p.pose.box
                drawn.append(OverlayPerson(tid, lm, (b.x0, b.y0, b.x1, b.y1), caption, tid == primary))
            header = f"{model.name}  t={frame.timestamp_s:5.2f}s"
            if response.clip is not None:
                header += f"  clip: {response.clip.label}"
            writer.write(draw(frame.rgb, drawn, header))
    finally:
        reader.close()
        if writer is not None:
            writer.close()
