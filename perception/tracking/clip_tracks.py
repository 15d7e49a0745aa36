"""A finished clip's tracks: the per-frame history, one person's fragments stitched together
(offline), and the person performing the action (the primary track)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from perception.tracking.geometry import (
    BODY_JOINTS,
    BORDER_GAP_S,
    known_size,
    landmark_box,
    torso_length,
    touches_border,
)
from perception.tracking.tracker import TrackUpdate
from skeleton.types import PersonPose, SkeletonSequence

__all__ = [
    "MIN_TRACK_FRAMES",
    "PrimaryScore",
    "TrackHistory",
    "clip_tracks",
    "primary_track_scores",
    "select_primary_track",
    "stitch_tracks",
]


class TrackHistory:
    """Accumulates `TrackUpdate`s of a whole clip into one `SkeletonSequence` per track.

    Every update is a time step; a track absent from an update is NaN there (missed).
    """

    def __init__(self) -> None:
        self.timestamps: list[float] = []
        self._poses: dict[int, dict[int, PersonPose]] = {}
        self.confirmed: set[int] = set()  # tracks that passed probation (`TrackedPerson.confirmed`)

    def __len__(self) -> int:
        return len(self.timestamps)

    def add(self, update: TrackUpdate) -> None:
        step = len(self.timestamps)
        self.timestamps.append(update.timestamp_s)
        for person in update.tracks:
            self._poses.setdefault(person.track_id, {})[step] = person.pose
            if person.confirmed:
                self.confirmed.add(person.track_id)

    def sequences(self, min_frames: int = 1) -> dict[int, SkeletonSequence]:
        """Track id -> full-length sequence (NaN where missed), for tracks seen >= ``min_frames``."""
        out = {}
        for tid in sorted(self._poses):
            seen = self._poses[tid]
            if len(seen) < min_frames:
                continue
            poses = [seen.get(i) for i in range(len(self.timestamps))]
            out[tid] = SkeletonSequence.from_poses(self.timestamps, poses)
        return out


# Tracks seen in fewer frames are detector blips, not people: dropped from a finished clip
# (POST /recognize and offline extraction alike).
MIN_TRACK_FRAMES = 3


def clip_tracks(
    history: TrackHistory,
    frame_size: tuple[float, float] | None,
    stitch: bool = True,
    min_frames: int = MIN_TRACK_FRAMES,
) -> tuple[dict[int, SkeletonSequence], dict[int, tuple[int, ...]]]:
    """A finished clip's people: tracks seen in fewer than ``min_frames`` frames dropped, with
    ``stitch`` the fragments of one person joined (`stitch_tracks`), and a person none of whose
    tracks was ever confirmed (`perception.tracking.tracker.TrackerConfig.confirm_s`) dropped;
    a kept person keeps every frame, from the first sighting. Returns (first id -> sequence,
    first id -> the online track ids it is made of)."""
    sequences = history.sequences(min_frames=min_frames)
    if stitch:
        joined, members = stitch_tracks(sequences, frame_size=frame_size)
    else:
        joined, members = dict(sequences), {i: (i,) for i in sequences}
    keep = [i for i, parts in members.items() if history.confirmed.intersection(parts)]
    return {i: joined[i] for i in keep}, {i: members[i] for i in keep}


# --------------------------------------------------------------------------- primary person


@dataclass(frozen=True, slots=True)
class PrimaryScore:
    """Why a track was (not) chosen: the parts of its score."""

    motion: float  # mean body displacement over MOTION_HORIZON_S, in body heights per second
    coverage: float  # fraction of the clip's frames where the person was seen
    size: float  # median body height as a fraction of the frame height (or px if unknown)
    centrality: float  # 1 at the frame's horizontal centre, 0 at its edges (1 if width unknown)
    score: float


# Displacement is measured over this horizon, not frame to frame: landmark jitter does not add
# up over time, real movement does, so a still person scores near zero at any frame rate.
MOTION_HORIZON_S = 0.5


def _body_height(image: np.ndarray) -> np.ndarray:
    """(T,) per-frame shoulder-to-ankle-ish extent in pixels: a size that survives lying down."""
    # torso length x ~3 approximates body height and, unlike the box, does not shrink with
    # the person's posture in the image (sitting, bending)
    return torso_length(image) * 3.0


def _motion(t: np.ndarray, body: np.ndarray, height: float) -> float:
    """Mean speed of the body joints over MOTION_HORIZON_S windows, in body heights per second."""
    later = np.searchsorted(t, t + MOTION_HORIZON_S)
    ok = later < len(t)
    if not ok.any():
        return 0.0
    i = np.flatnonzero(ok)
    j = later[ok]
    dt = t[j] - t[i]
    close = dt < 2 * MOTION_HORIZON_S  # skip pairs spanning a long miss
    if not close.any():
        return 0.0
    disp = np.linalg.norm(body[j[close]] - body[i[close]], axis=2).mean(axis=1)
    return float(np.mean(disp / dt[close])) / max(height, 1.0)


def primary_track_scores(
    tracks: Sequence[SkeletonSequence],
    frame_height: float | None = None,
    clip_frames: int | None = None,
    frame_width: float | None = None,
) -> list[PrimaryScore]:
    """Score each track for "is this the person performing the action".

    The actor of an action clip moves (motion, scaled by the person's own size so near and far
    people compare), is in view for long (coverage), and is framed by the camera: large and not
    at the image's edge. score = coverage * (PRIMARY_MOTION_BIAS + motion) * size * centrality^0.5.
    Measured on UP-Fall Cam2 (a seated bystander at the right edge): see docs/pose_notes.md.
    """
    n_frames = clip_frames or max((len(s) for s in tracks), default=0)
    out = []
    for seq in tracks:
        img = seq.image.astype(np.float64)
        seen = np.isfinite(img[:, :, :2]).all(axis=(1, 2))
        coverage = float(seen.sum()) / max(n_frames, 1)
        if seen.sum() < 2:
            out.append(PrimaryScore(0.0, coverage, 0.0, 0.0, 0.0))
            continue
        height = float(np.median(_body_height(img[seen])))
        motion = _motion(seq.timestamps[seen], img[seen][:, BODY_JOINTS, :2], height)
        size = height / frame_height if frame_height else height
        centrality = 1.0
        if frame_width:
            x = float(np.median(img[seen][:, [23, 24], 0].mean(axis=1)))
            centrality = float(np.clip(1.0 - abs(x - frame_width / 2) / (frame_width / 2), 0.0, 1.0))
        score = coverage * (PRIMARY_MOTION_BIAS + motion) * size * np.sqrt(centrality)
        out.append(PrimaryScore(motion, coverage, size, centrality, float(score)))
    return out


PRIMARY_MOTION_BIAS = 0.1


def select_primary_track(
    tracks: Sequence[SkeletonSequence] | Mapping[int, SkeletonSequence],
    frame_height: float | None = None,
    clip_frames: int | None = None,
    frame_width: float | None = None,
) -> int | None:
    """Index (or key, for a mapping) of the track most likely performing the action; None if empty."""
    if isinstance(tracks, Mapping):
        keys = list(tracks)
        idx = select_primary_track([tracks[k] for k in keys], frame_height, clip_frames, frame_width)
        return None if idx is None else keys[idx]
    if not tracks:
        return None
    scores = primary_track_scores(tracks, frame_height, clip_frames, frame_width)
    return int(np.argmax([s.score for s in scores]))


def stitch_tracks(
    tracks: Mapping[int, SkeletonSequence],
    max_gap_s: float = 3.0,
    max_jump: float = 0.5,
    max_speed: float = 1.0,
    max_overlap_s: float = 0.15,
    frame_size: tuple[float, float] | None = None,
    border_gap_s: float = BORDER_GAP_S,
) -> tuple[dict[int, SkeletonSequence], dict[int, tuple[int, ...]]]:
    """Offline: join tracks of one person that the online tracker split (left the frame, re-found).

    Track B may continue track A when B starts at most ``max_gap_s`` after A ends (overlapping by
    at most ``max_overlap_s``, e.g. one frame of a double detection) and B's first hip centre is
    within ``max_jump + max_speed * gap`` body heights of A's last one. With ``frame_size``
    (width, height), the tracker's border rule holds across gaps over ``border_gap_s``: A's last
    pose and B's first must agree on being at the frame's border (one who left is not the one who
    appears mid-image; one who appears at the border is entering). A short track that another
    track took over on the same person is joined to nothing (`_handover_fragments`).
    The pair nearest in space and time is joined first, until no pair qualifies. Returns (first
    id -> joined sequence, first id -> member ids). All sequences share one time axis (as
    `TrackHistory.sequences` gives them).
    """
    merged = {i: seq for i, seq in tracks.items() if _seen(seq).any()}
    fragments = _handover_fragments(merged)
    frame_size = known_size(frame_size)

    def at_border(seq: SkeletonSequence, k: int) -> bool:
        return touches_border(seq.image[k, :, :2], frame_size) if frame_size is not None else False

    chains: dict[int, list[int]] = {i: [i] for i in merged}
    while True:
        best: tuple[float, int, int] | None = None
        for a, a_seq in merged.items():
            a_seen = _seen(a_seq)
            a1 = int(np.flatnonzero(a_seen)[-1])
            height = max(float(np.median(_body_height(a_seq.image[a_seen].astype(np.float64)))), 1.0)
            a_hip = _hip(a_seq, a1)
            for b, b_seq in merged.items():
                b_seen = _seen(b_seq)
                b0 = int(np.flatnonzero(b_seen)[0])
                gap = float(b_seq.timestamps[b0] - a_seq.timestamps[a1])
                if a == b or a in fragments or b in fragments:
                    continue
                if gap > max_gap_s or gap < -max_overlap_s or b0 <= int(np.flatnonzero(a_seen)[0]):
                    continue
                if (a_seen & b_seen).sum() * 2 > b_seen.sum():
                    continue  # mostly simultaneous: two people, not one
                if gap > border_gap_s and at_border(a_seq, a1) != at_border(b_seq, b0):
                    continue  # one left the view and another appeared inside it, or the reverse
                jump = float(np.linalg.norm(_hip(b_seq, b0) - a_hip)) / height
                if jump > max_jump + max_speed * max(gap, 0.0):
                    continue
                cost = jump + max_speed * abs(gap)  # near in space and time first
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        if best is None:
            break
        _, a, b = best
        a_seq, b_seq = merged[a], merged.pop(b)
        take = _seen(b_seq)
        image, world, vis = a_seq.image.copy(), a_seq.world.copy(), a_seq.visibility.copy()
        image[take], world[take], vis[take] = b_seq.image[take], b_seq.world[take], b_seq.visibility[take]
        merged[a] = SkeletonSequence(a_seq.timestamps, image, world, vis)
        chains[a] += chains.pop(b)
    return merged, {i: tuple(c) for i, c in chains.items()}


# A track seen in at most this many frames that another track, overlapping it on screen, takes
# over while it is still seen is a duplicate that the pose estimator replaced.
HANDOVER_FRAMES = 5


def _handover_fragments(tracks: Mapping[int, SkeletonSequence]) -> set[int]:
    """Short tracks that another track replaced on the same person: not joined by stitching.

    MediaPipe can follow a person entering the view with a badly placed ROI for a few frames,
    then detect them properly: two tracks, both at the person, for a frame. In UP-Fall
    Activity6/Trial1Cam1 the walker re-entering at 10.5 s was two frames of a small skeleton
    above his shoulder (hip 140 px too high) before the right one; joined into his track, that
    jump read as a fall (window fall probability 0.74).
    """
    seen = {i: np.flatnonzero(_seen(seq)) for i, seq in tracks.items()}
    out = set()
    for b, b_idx in seen.items():
        if len(b_idx) > HANDOVER_FRAMES:
            continue
        last = int(b_idx[-1])
        box = landmark_box(tracks[b].image[last])
        for c, c_idx in seen.items():
            if c == b or not (b_idx[0] < c_idx[0] <= last < c_idx[-1]):
                continue
            if box.iou(landmark_box(tracks[c].image[last])) > 0.1:
                out.add(b)
                break
    return out


def _seen(seq: SkeletonSequence) -> np.ndarray:
    return np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))


def _hip(seq: SkeletonSequence, k: int) -> np.ndarray:
    return seq.image[k, [23, 24], :2].astype(np.float64).mean(axis=0)
