"""Pipeline results -> wire messages (`service.schemas`): the one place that packs landmarks,
boxes, scores and timings for clients, rounded as the API documents them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.clips.result import PersonResult
from service.frames import TrackedFrame
from service.registry import LoadedModel
from service.schemas import (
    ClipResult,
    EventOut,
    FallEventOut,
    FrameMessage,
    FramePeople,
    FramePerson,
    FrameTimings,
    LabelScore,
    PostureOut,
    ProcessingStats,
    RecognizeResponse,
    Segment,
    StageTimes,
    TrackResult,
    TrackState,
    VideoInfo,
)
from service.smoothing import LabelEvent
from service.tracks import TrackSet
from skeleton.clip import ClipDecision
from skeleton.falls import FallEvent, FallRule, Posture
from skeleton.manifest import FallRuleSpec
from skeleton.types import PersonPose

__all__ = [
    "ClipStats",
    "box_corners",
    "fall_events_out",
    "frame_message",
    "frames_out",
    "landmarks_with_visibility",
    "ms",
    "recognize_response",
    "top_scores",
]


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def landmarks_with_visibility(pose: PersonPose) -> np.ndarray:
    """(33, 3): x, y in pixels and visibility (what clients and the overlay draw)."""
    return np.concatenate([pose.image[:, :2], pose.visibility[:, None]], axis=1)


def box_corners(pose: PersonPose) -> tuple[float, float, float, float]:
    b = pose.box
    return b.x0, b.y0, b.x1, b.y1


def top_scores(labels: list[str], probs: np.ndarray | None, k: int) -> list[LabelScore]:
    """The ``k`` best labels with their scores (rounded for the wire); none without scores."""
    if probs is None:
        return []
    idx = np.argsort(-probs)[:k]
    return [LabelScore(label=labels[i], score=round(float(probs[i]), 4)) for i in idx]


def events_out(events: Sequence[tuple[int, LabelEvent]]) -> list[EventOut]:
    return [EventOut(type=e.kind, track_id=tid, label=e.label, time=round(e.time, 4)) for tid, e in events]


def _finite(x: float, digits: int) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


def _posture(p: Posture) -> PostureOut:
    return PostureOut(
        torso_angle=_finite(p.torso_angle, 1),
        torso_length=_finite(p.torso_length, 4),
        shoulder_y=_finite(p.shoulder_y, 4),
        seen=round(p.seen, 3),
    )


def fall_events_out(events: Sequence[FallEvent], labels: list[str]) -> list[FallEventOut]:
    """``skeleton.falls`` events for the wire (``label``: the fall class's name)."""
    return [
        FallEventOut(
            type=e.kind,
            track_id=e.track_id,
            time=round(e.time, 4),
            fall_time=round(e.fall_time, 4),
            confidence=round(e.confidence, 4),
            label=labels[e.label] if 0 <= e.label < len(labels) else "",
            fall_windows=[round(t, 4) for t in e.fall_windows],
            before=_posture(e.before),
            after=_posture(e.after),
            down_s=round(e.down_s, 4),
            handed_over_from=e.handed_over_from,
        )
        for e in events
    ]


def rule_spec(rule: FallRule | None) -> FallRuleSpec | None:
    return None if rule is None else rule.spec


# ----------------------------------------------------------------------------- WebSocket frames


def frame_message(
    tracked: TrackedFrame,
    tracks: TrackSet,
    top_k: int,
    events: Sequence[tuple[int, LabelEvent]],
    timings: FrameTimings,
    counters: tuple[int, int, int],
    falls: Sequence[FallEvent] = (),
) -> FrameMessage:
    """The reply to one stream frame: every person seen with their track's smoothed state."""
    labels = tracks.model.labels
    states = []
    for person in tracked.people:
        record = tracks.open.get(person.track_id)
        st = record.last_state if record is not None else None
        states.append(
            TrackState(
                track_id=person.track_id,
                box=[round(v, 1) for v in box_corners(person.pose)],
                landmarks=np.round(landmarks_with_visibility(person.pose).astype(np.float64), 2).tolist(),
                label=st.label if st is not None else None,
                confidence=round(st.confidence, 4) if st is not None else 0.0,
                top=top_scores(labels, st.probs if st is not None else None, top_k),
                window_fill=round(record.buffer.fill, 3) if record is not None else 0.0,
            )
        )
    received, processed, dropped = counters
    return FrameMessage(
        frame_id=tracked.index,
        timestamp=round(tracked.timestamp, 4),
        width=tracked.width,
        height=tracked.height,
        tracks=states,
        events=events_out(events),
        timings_ms=timings,
        received=received,
        processed=processed,
        dropped=dropped,
        falls=fall_events_out(falls, labels),
    )


# ----------------------------------------------------------------------------- POST /recognize


@dataclass(frozen=True, slots=True)
class ClipStats:
    """How a clip was processed (``stage_ms``: each stage's summed time; stages overlap)."""

    frames_decoded: int
    frames_processed: int
    windows: int
    batches: int
    wall_s: float
    pose_lanes: int
    stage_ms: dict[str, float]


def frames_out(
    people: list[PersonResult],
    timestamps: Sequence[float],
    size: tuple[int, int],
    scale: float,
    landmarks: bool,
) -> list[FramePeople]:
    """Every frame's people (``frames=boxes|landmarks``), from the people's sequences on the clip's
    time axis: boxes of the landmarks clipped to the analysed frame of ``size``, in pixels of the
    video (analysed pixels / ``scale``)."""
    from perception.pose.person import pose_from_pixels

    out = [FramePeople(frame=k, time=round(float(t), 4), people=[]) for k, t in enumerate(timestamps)]
    for p in people:
        seq = p.sequence
        seen = np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))
        for k in np.flatnonzero(seen):
            pose = pose_from_pixels(seq.image[k], seq.world[k], seq.visibility[k], *size)
            person = FramePerson(track_id=p.track_id, box=[round(v / scale, 1) for v in box_corners(pose)])
            if landmarks:
                xyv = landmarks_with_visibility(pose).astype(np.float64)
                xyv[:, :2] /= scale
                person.landmarks = np.round(xyv, 2).tolist()
            out[k].people.append(person)
    return out


def recognize_response(
    model: LoadedModel,
    people: list[PersonResult],
    primary: int | None,
    decision: ClipDecision | None,
    source: str,
    video: VideoInfo | None,
    stats: ClipStats,
    top_k: int,
    stride: int | None,
    warnings: list[str],
    falls: Sequence[FallEvent] = (),
    fall_rule: FallRule | None = None,
) -> RecognizeResponse:
    labels = model.labels
    clip: ClipResult | None = None
    if decision is not None and primary is not None:
        d = decision
        clip = ClipResult(
            track_id=primary,
            label=labels[d.label],
            confidence=round(d.confidence, 4),
            top=top_scores(labels, d.probs, top_k),
            fall=d.fall,
            fall_time=None if d.fall_time is None else round(d.fall_time, 4),
            fall_probability=round(d.fall_probability, 4),
        )
    return RecognizeResponse(
        model=model.name,
        provider=model.runtime.provider,
        source=source,  # type: ignore[arg-type]
        video=video,
        window=model.window_info(stride),
        tracks=[_track_result(p, labels, top_k, p.track_id == primary) for p in people],
        primary_track_id=primary,
        clip=clip,
        stats=ProcessingStats(
            frames_decoded=stats.frames_decoded,
            frames_processed=stats.frames_processed,
            windows=stats.windows,
            batches=stats.batches,
            wall_s=round(stats.wall_s, 3),
            fps_processed=round(stats.frames_processed / max(stats.wall_s, 1e-9), 2),
            pose_lanes=stats.pose_lanes,
            stage_ms=StageTimes(**stats.stage_ms),
        ),
        warnings=warnings,
        falls=fall_events_out(falls, labels),
        fall_rule=rule_spec(fall_rule),
    )


def _track_result(p: PersonResult, labels: list[str], k: int, primary: bool) -> TrackResult:
    mean = p.window_probs.mean(axis=0) if len(p.window_probs) else None
    return TrackResult(
        track_id=p.track_id,
        members=list(p.members),
        primary=primary,
        first_seen=round(p.first_seen, 4),
        last_seen=round(p.last_seen, 4),
        frames=p.frames,
        windows=len(p.window_probs),
        segments=[
            Segment(
                start=round(s.start, 4), end=round(s.end, 4), label=s.label, confidence=round(s.confidence, 4)
            )
            for s in p.segments
        ],
        top=top_scores(labels, mean, k),
    )
