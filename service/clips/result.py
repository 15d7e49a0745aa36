"""A finished clip's people, chosen exactly as the offline extraction chooses them, and its label.

Tracks seen in fewer than ``MIN_TRACK_FRAMES`` frames are dropped, fragments of one person are
stitched (`perception.tracking.clip_tracks.stitch_tracks`), the primary person is
`select_primary_track`'s choice, and the clip label is decided on the primary person's windows
(`decide_clip`): with a fall rule by the confirmed falls of every person (`service.falls.clip_falls`,
`skeleton.clip.decide_confirmed`), else by `skeleton.clip.decide` with the manifest's clip rule:
the offline evaluation's code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perception.tracking.clip_tracks import MIN_TRACK_FRAMES, clip_tracks, select_primary_track
from service.buffer import cut_window, to_layouts
from service.core.config import Settings
from service.core.errors import ServiceError
from service.registry import LoadedModel
from service.smoothing import TimelineSegment, smoothing_config, timeline
from skeleton.clip import ClipDecision, ClipRule, decide, decide_confirmed, window_ends
from skeleton.falls import FallEvent, FallRule
from skeleton.manifest import WindowSpec
from skeleton.types import SkeletonSequence

if TYPE_CHECKING:
    from service.clips.job import ClipOutcome

__all__ = ["MIN_TRACK_FRAMES", "PersonResult", "clip_people", "clip_sequences", "decide_clip", "too_short"]


def too_short(filename: str, frames: int, fps: float, model: LoadedModel) -> ServiceError | None:
    """A 422 for a video with too few frames for any window of ``model`` (None: long enough).

    The rule is the clip's own: a person seen in fewer than ``MIN_TRACK_FRAMES`` frames is dropped
    as a blip before windows are cut, so no clip shorter than that can get a label; a clip shorter
    than one window gets a single window (``skeleton.clip.window_ends``), with its first pose held.
    """
    if frames >= MIN_TRACK_FRAMES:
        return None
    window = model.manifest.input.window
    rate = fps if fps > 0 else window.fps
    need = MIN_TRACK_FRAMES / rate
    return ServiceError(
        422,
        "video_too_short",
        f"{filename} has {frames} frame{'s' if frames != 1 else ''}: too short for any window of "
        f"{model.name}, which needs a person seen in at least {MIN_TRACK_FRAMES} frames "
        f"({need:.2f} s at {rate:g} fps); its full window is {window.seconds:.2f} s "
        f"({window.length} frames at {window.fps:g} fps)",
        f"send a video of at least {need:.2f} s, ideally {window.seconds:.2f} s or more "
        "(a still image is not a video)",
    )


@dataclass
class PersonResult:
    """One person of a finished clip (possibly several online tracks joined) and their windows."""

    track_id: int
    members: tuple[int, ...]
    first_seen: float
    last_seen: float
    frames: int
    window_ends: np.ndarray  # (W,)
    window_probs: np.ndarray  # (W, K)
    segments: list[TimelineSegment]
    sequence: SkeletonSequence  # on the clip's time axis, NaN where not seen (fall postures)


def decide_clip(
    model: LoadedModel,
    person: PersonResult,
    fall_rule: FallRule | None = None,
    falls: Sequence[FallEvent] = (),
) -> ClipDecision:
    """The offline evaluation's clip decision on one person's windows: with a fall rule, by the
    clip's confirmed ``falls`` (``skeleton.clip.decide_confirmed``), else ``skeleton.clip.decide``."""
    p, t = person.window_probs, person.window_ends
    if fall_rule is None:
        return decide(p, t, ClipRule.from_manifest(model.manifest))
    return decide_confirmed(p, t, ClipRule(fall_rule.fall_classes), falls, person.track_id)


def clip_sequences(
    outcome: ClipOutcome, settings: Settings
) -> tuple[dict[int, SkeletonSequence], dict[int, tuple[int, ...]], int | None]:
    """The clip's people as sequences (blips dropped, fragments stitched), the online tracks each
    joins, and the primary person's id (None: nobody)."""
    history = outcome.history
    joined, members = clip_tracks(history, (outcome.width, outcome.height), settings.stitch_tracks)
    if not joined:
        return {}, {}, None
    ids = sorted(joined)
    idx = select_primary_track(
        [joined[i] for i in ids],
        frame_height=float(outcome.height) or None,
        clip_frames=len(history),
        frame_width=float(outcome.width) or None,
    )
    return joined, {k: tuple(v) for k, v in members.items()}, None if idx is None else ids[idx]


async def clip_people(
    model: LoadedModel, outcome: ClipOutcome, settings: Settings, stride: int | None
) -> tuple[list[PersonResult], int | None]:
    """The clip's people (blips dropped, fragments of one person stitched) and the primary one.

    A person made of one online track keeps the windows classified during the pass; a stitched
    person's windows are recomputed over the joined sequence (the same window protocol).
    """
    joined, members, primary = clip_sequences(outcome, settings)
    if not joined:
        return [], None
    ids = sorted(joined)
    smoothing = smoothing_config(settings)
    window = model.manifest.input.window.with_stride(stride)
    out = []
    for tid in ids:
        seq, parts = joined[tid], tuple(members[tid])
        seen = np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))
        t_seen = seq.timestamps[seen]
        record = outcome.tracks.record(tid) if len(parts) == 1 else None
        if record is not None:
            ends = np.asarray(record.window_ends, np.float64)
            probs = np.stack(record.window_probs) if record.window_probs else np.zeros((0, len(model.labels)))
            segments = list(record.timeline.segments)
        else:
            ends, probs = await _classify_sequence(model, seq, seen, outcome.height, window)
            segments = timeline(
                model.labels, smoothing, ends, probs, window.seconds, float(t_seen[-1]), float(t_seen[0])
            )
        out.append(
            PersonResult(
                tid, parts, float(t_seen[0]), float(t_seen[-1]), int(seen.sum()), ends, probs, segments, seq
            )
        )
    return out, primary


async def _classify_sequence(
    model: LoadedModel, seq: SkeletonSequence, seen: np.ndarray, height: int, window: WindowSpec
) -> tuple[np.ndarray, np.ndarray]:
    joints = to_layouts(seq, model.specs, float(height))
    t = seq.timestamps
    ends = window_ends(float(t[seen][0]), float(t[seen][-1]), window.seconds, window.hop_s)
    windows = np.stack([cut_window(model.specs, t, joints, float(e)) for e in ends])
    return ends, (await model.batcher.submit(windows)).probs
