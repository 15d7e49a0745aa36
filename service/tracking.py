"""Per-person tracking: stable integer ids across frames, and choosing the person doing the action.

The pose estimator returns people in arbitrary order each frame; action models need one
person's skeleton over time. `Tracker` matches detections to tracks with the Hungarian
algorithm on a cost mixing box IoU and normalised keypoint distance, after a constant-velocity
prediction of each track, and keeps a track alive through brief misses. Given the frame size,
it also knows that people enter and leave across the frame's border (``border_gap_s``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from skeleton.types import BoundingBox, PersonPose, SkeletonSequence

__all__ = [
    "PrimaryScore",
    "TrackHistory",
    "TrackUpdate",
    "TrackedPerson",
    "Tracker",
    "TrackerConfig",
    "primary_track_scores",
    "select_primary_track",
    "stitch_tracks",
    "touches_border",
]

# Shoulders, elbows, wrists, hips, knees, ankles: the joints that move with the body; face and
# finger landmarks are noisy and would add jitter to both matching and motion energy.
BODY_JOINTS = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
TORSO_JOINTS = (11, 12, 23, 24)


# A pose whose landmarks come within this fraction of the frame's width (height) of its left or
# right (top or bottom) border is at the border: entering or leaving the view. The walker of
# UP-Fall Activity6 Cam1 enters with its box 11-26 px from the left of 640 px; people seen
# through the glass wall mid-image are 160 px or more from every border.
EDGE_MARGIN = 0.05
# how long a track must have been unseen before the border rule applies (TrackerConfig)
BORDER_GAP_S = 0.25


@dataclass(frozen=True, slots=True)
class TrackedPerson:
    """A pose with the id of the track it belongs to."""

    track_id: int
    pose: PersonPose


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """Result of one `Tracker.update`: people seen in this frame, and tracks that ended."""

    timestamp_s: float
    tracks: tuple[TrackedPerson, ...]
    closed: tuple[int, ...] = ()

    @property
    def track_ids(self) -> tuple[int, ...]:
        return tuple(t.track_id for t in self.tracks)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Matching weights and gates. Costs are in [0, 1]; a pair above ``max_cost`` never matches."""

    # the keypoint term is the *median* body-joint distance: arm swings move wrists and elbows a
    # lot between frames (felix_exercise.avi), the median follows the torso and legs. With the
    # mean, a ghost skeleton between two people took a person's track over.
    iou_weight: float = 0.5
    keypoint_weight: float = 0.5
    max_cost: float = 0.8
    max_missed_s: float = 1.0
    min_visibility: float = 0.3
    # second pass for what the first leaves: a track and a detection whose hip centres are within
    # this many body sizes (box's longer side) still match. A fall changes a person's box and pose
    # so much in one frame that the first pass rejects it; this keeps the falling person's id.
    max_jump: float = 1.0
    # A track seen in fewer than ``confirm_hits`` frames is tentative: only the strict first pass
    # continues it, and it closes after more than ``tentative_max_misses`` updates in a row
    # without a match (counted in updates, not seconds, so it means the same at any analysed
    # frame rate). A blip is seen once or twice; when it could wait a full ``max_missed_s`` for
    # anyone nearby, a passer-by seen for 2 frames behind a glass wall took the id of the actor
    # re-entering 0.44 s later and became the start of the actor's track (UP-Fall
    # Activity6/Trial2Cam1, docs/pose_notes.md), whose fill-in read as a fall.
    confirm_hits: int = 3
    tentative_max_misses: int = 2
    # ... and only with a detection whose torso (shoulder centre to hip centre) is within this
    # factor of its own. MediaPipe's first skeletons of a person entering the view can be
    # misplaced: the walker re-entering UP-Fall Activity6/Trial1Cam1 was two frames of a small
    # skeleton above his shoulder (torso 54-75 px), then the right one (131 px, hip 134 px
    # lower), and that drop read as a fall. Confirmed tracks are not gated: a falling person's
    # torso foreshortens to 8 px and grows back (UP-Fall Cam2 falls).
    tentative_max_scale: float = 2.0
    # People enter and leave the view across its border. After a track has been unseen for more
    # than ``border_gap_s``, it continues only with a detection that agrees with its last pose on
    # being at the border (``EDGE_MARGIN``; needs the frame size in ``update``): one who left is
    # not the one who appears mid-image, and one who appears at the border is entering. With
    # two clip pose lanes, the walker of UP-Fall Activity6/Trial1Cam1 re-entering at the left
    # border took over, 0.39 s later, the track of a passer-by seen mid-image behind the glass
    # wall (first-pass cost 0.68 after velocity extrapolation), and the join read as a fall.
    border_gap_s: float = BORDER_GAP_S
    velocity_smoothing: float = 0.5  # EMA weight of the newest velocity estimate
    max_prediction_s: float = 0.5  # extrapolate at most this far (avoid runaway predictions)


@dataclass
class _Track:
    track_id: int
    pose: PersonPose
    last_seen: float
    first_seen: float
    hits: int = 1
    misses: int = 0  # updates in a row without a match
    velocity: np.ndarray | None = None  # (33, 2) px/s of image x, y

    def predicted_xy(self, t: float, horizon: float) -> np.ndarray:
        xy = self.pose.image[:, :2].astype(np.float64)
        if self.velocity is None:
            return xy
        dt = float(np.clip(t - self.last_seen, 0.0, horizon))
        return xy + self.velocity * dt


def _centre(xy: np.ndarray) -> np.ndarray:
    """Hip centre (landmarks 23, 24), or the mean of all points if the hips are not finite."""
    hips = xy[[23, 24]].astype(np.float64).mean(axis=0)
    return hips if np.isfinite(hips).all() else np.nanmean(xy.astype(np.float64), axis=0)


def touches_border(xy: np.ndarray, frame_size: tuple[float, float], margin: float = EDGE_MARGIN) -> bool:
    """Whether a pose's image landmarks (33, 2) reach the frame's border (or beyond it)."""
    width, height = frame_size
    box = _landmark_box(xy)
    mx, my = margin * width, margin * height
    return bool(box.x0 <= mx or box.y0 <= my or box.x1 >= width - mx or box.y1 >= height - my)


def _known_size(frame_size: tuple[float, float] | None) -> tuple[float, float] | None:
    """The frame size, or None when it is unknown (not given, or a zero side)."""
    return frame_size if frame_size is not None and all(frame_size) else None


def _torso_length(image: np.ndarray) -> np.ndarray:
    """Shoulder centre to hip centre in pixels, for landmarks (..., 33, C): one value per pose."""
    torso = image[..., TORSO_JOINTS, :2].astype(np.float64)
    return np.linalg.norm(torso[..., :2, :].mean(axis=-2) - torso[..., 2:, :].mean(axis=-2), axis=-1)


def _box_of(xy: np.ndarray, mask: np.ndarray) -> BoundingBox:
    pts = xy[mask] if mask.any() else xy
    return BoundingBox(
        float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
    )


class Tracker:
    """Assigns stable track ids to per-frame poses. One instance per stream/clip.

    ``update`` must be called for every analysed frame (also frames with no people) so misses
    are counted in time; a track unseen for more than ``max_missed_s`` is closed and freed.
    """

    def __init__(self, config: TrackerConfig | None = None, **overrides: Any) -> None:
        base = config or TrackerConfig()
        self.config = replace(base, **overrides) if overrides else base
        self._tracks: dict[int, _Track] = {}
        self._ids = itertools.count(1)
        self._last_t: float | None = None

    @property
    def live_track_ids(self) -> tuple[int, ...]:
        """Tracks not yet closed (including ones missed in the latest frames)."""
        return tuple(self._tracks)

    def reset(self) -> tuple[int, ...]:
        """Close every track (e.g. the stream restarted); returns their ids."""
        closed = tuple(self._tracks)
        self._tracks.clear()
        self._last_t = None
        return closed

    def update(
        self, poses: Sequence[PersonPose], timestamp_s: float, frame_size: tuple[float, float] | None = None
    ) -> TrackUpdate:
        """Match this frame's poses to tracks. ``frame_size`` (width, height) of the analysed frame
        turns on the border rule (``TrackerConfig.border_gap_s``); None or a zero side: unknown."""
        frame_size = _known_size(frame_size)
        cfg = self.config
        t = float(timestamp_s)
        if self._last_t is not None and t < self._last_t:
            t = self._last_t  # tolerate clock jitter; never predict backwards
        self._last_t = t
        track_list = list(self._tracks.values())
        allowed = self._allowed_pairs(track_list, poses, t, frame_size)
        pairs: list[tuple[int, int]] = []
        if track_list and poses:
            cost = np.where(allowed, self._cost_matrix(track_list, poses, t), np.inf)
            rows, cols = linear_sum_assignment(np.minimum(cost, 1e6))
            pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= cfg.max_cost]
        pairs += self._second_pass(track_list, poses, pairs, t, allowed)
        matched_dets = {c for _, c in pairs}
        matched_tracks = {r for r, _ in pairs}
        for i, track in enumerate(track_list):
            track.misses = 0 if i in matched_tracks else track.misses + 1
        out: list[TrackedPerson] = []
        for r, c in pairs:
            track = track_list[r]
            self._absorb(track, poses[c], t)
            out.append(TrackedPerson(track.track_id, poses[c]))
        for j, pose in enumerate(poses):
            if j not in matched_dets:
                track = _Track(next(self._ids), pose, t, t)
                self._tracks[track.track_id] = track
                out.append(TrackedPerson(track.track_id, pose))
        closed = tuple(tid for tid, tr in self._tracks.items() if self._expired(tr, t))
        for tid in closed:
            del self._tracks[tid]
        out.sort(key=lambda p: p.track_id)
        return TrackUpdate(t, tuple(out), closed)

    def _expired(self, track: _Track, t: float) -> bool:
        """Unseen for longer than its kind of track may wait (tentative tracks wait less)."""
        cfg = self.config
        if track.hits < cfg.confirm_hits and track.misses > cfg.tentative_max_misses:
            return True
        return t - track.last_seen > cfg.max_missed_s + 1e-9

    def _allowed_pairs(
        self,
        tracks: list[_Track],
        poses: Sequence[PersonPose],
        t: float,
        frame_size: tuple[float, float] | None,
    ) -> np.ndarray:
        """(tracks, poses) bool: the pairs the tentative tracks' size gate and the border rule allow."""
        allowed = np.ones((len(tracks), len(poses)), bool)
        if not tracks or not poses:
            return allowed
        cfg = self.config
        tentative = np.array([tr.hits < cfg.confirm_hits for tr in tracks])
        if tentative.any():
            pose_torso = _torso_length(np.stack([p.image for p in poses]))
            for i in np.flatnonzero(tentative):
                ratio = pose_torso / max(float(_torso_length(tracks[i].pose.image)), 1e-6)
                allowed[i] &= (ratio <= cfg.tentative_max_scale) & (ratio >= 1.0 / cfg.tentative_max_scale)
        if frame_size is None:
            return allowed
        gone = np.array([t - tr.last_seen > cfg.border_gap_s for tr in tracks])
        if gone.any():
            track_at = np.array([touches_border(tr.pose.image[:, :2], frame_size) for tr in tracks])
            pose_at = np.array([touches_border(p.image[:, :2], frame_size) for p in poses])
            allowed[gone] = track_at[gone, None] == pose_at[None, :]
        return allowed

    def _second_pass(
        self,
        tracks: list[_Track],
        poses: Sequence[PersonPose],
        pairs: list[tuple[int, int]],
        t: float,
        allowed: np.ndarray,
    ) -> list[tuple[int, int]]:
        """Match leftovers by hip-centre distance relative to the track's body size."""
        matched = {r for r, _ in pairs}
        free_tracks = [
            i for i in range(len(tracks))
            if i not in matched and tracks[i].hits >= self.config.confirm_hits
        ]
        taken = {c for _, c in pairs}
        free_dets = [j for j in range(len(poses)) if j not in taken]
        if not free_tracks or not free_dets:
            return []
        cost = np.full((len(free_tracks), len(free_dets)), np.inf)
        for a, i in enumerate(free_tracks):
            tr = tracks[i]
            pred = tr.predicted_xy(t, self.config.max_prediction_s)
            size = max(tr.pose.box.height, tr.pose.box.width, 1.0)
            for b, j in enumerate(free_dets):
                if allowed[i, j]:
                    jump = float(np.linalg.norm(_centre(pred) - _centre(poses[j].image[:, :2])))
                    cost[a, b] = jump / size
        ok = np.isfinite(cost) & (cost <= self.config.max_jump)
        if not ok.any():
            return []
        rows, cols = linear_sum_assignment(np.where(ok, cost, 1e6))
        return [(free_tracks[r], free_dets[c]) for r, c in zip(rows, cols, strict=True) if ok[r, c]]

    def _absorb(self, track: _Track, pose: PersonPose, t: float) -> None:
        dt = t - track.last_seen
        if dt > 1e-6:
            inst = (pose.image[:, :2].astype(np.float64) - track.pose.image[:, :2]) / dt
            inst = np.nan_to_num(inst)
            a = self.config.velocity_smoothing
            track.velocity = inst if track.velocity is None else a * inst + (1 - a) * track.velocity
        track.pose = pose
        track.last_seen = t
        track.hits += 1

    def _cost_matrix(self, tracks: list[_Track], poses: Sequence[PersonPose], t: float) -> np.ndarray:
        cfg = self.config
        joints = list(BODY_JOINTS)
        cost = np.ones((len(tracks), len(poses)), np.float64)
        for i, tr in enumerate(tracks):
            pred = tr.predicted_xy(t, cfg.max_prediction_s)
            tr_vis = tr.pose.visibility >= cfg.min_visibility
            pred_box = _box_of(pred, tr_vis)
            scale = max(np.hypot(pred_box.width, pred_box.height), 1.0)
            for j, pose in enumerate(poses):
                iou = pred_box.iou(_box_of(pose.image[:, :2], pose.visibility >= cfg.min_visibility))
                both = tr_vis[joints] & (pose.visibility[joints] >= cfg.min_visibility)
                sel = np.array(joints)[both] if both.sum() >= 3 else np.array(joints)
                d = np.linalg.norm(pred[sel] - pose.image[sel, :2], axis=1)
                kpt = float(np.clip(np.nanmedian(d) / scale, 0.0, 1.0)) if np.isfinite(d).any() else 1.0
                cost[i, j] = cfg.iou_weight * (1.0 - iou) + cfg.keypoint_weight * kpt
        return cost / max(cfg.iou_weight + cfg.keypoint_weight, 1e-9)


class TrackHistory:
    """Accumulates `TrackUpdate`s of a whole clip into one `SkeletonSequence` per track.

    Every update is a time step; a track absent from an update is NaN there (missed).
    """

    def __init__(self) -> None:
        self.timestamps: list[float] = []
        self._poses: dict[int, dict[int, PersonPose]] = {}

    def __len__(self) -> int:
        return len(self.timestamps)

    def add(self, update: TrackUpdate) -> None:
        step = len(self.timestamps)
        self.timestamps.append(update.timestamp_s)
        for person in update.tracks:
            self._poses.setdefault(person.track_id, {})[step] = person.pose

    def frames_seen(self, track_id: int) -> int:
        return len(self._poses.get(track_id, {}))

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
    return _torso_length(image) * 3.0


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
    frame_size = _known_size(frame_size)

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
        box = _landmark_box(tracks[b].image[last])
        for c, c_idx in seen.items():
            if c == b or not (b_idx[0] < c_idx[0] <= last < c_idx[-1]):
                continue
            if box.iou(_landmark_box(tracks[c].image[last])) > 0.1:
                out.add(b)
                break
    return out


def _landmark_box(image: np.ndarray) -> BoundingBox:
    """Box of a pose's finite image landmarks (33, >= 2)."""
    xy = image[:, :2]
    return _box_of(xy, np.isfinite(xy).all(axis=1))


def _seen(seq: SkeletonSequence) -> np.ndarray:
    return np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))


def _hip(seq: SkeletonSequence, k: int) -> np.ndarray:
    return seq.image[k, [23, 24], :2].astype(np.float64).mean(axis=0)
