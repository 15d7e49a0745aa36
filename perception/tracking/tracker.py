"""Online tracking: stable integer ids for the people of each frame, as the frames come.

The pose estimator returns people in arbitrary order each frame; action models need one
person's skeleton over time. `Tracker` matches detections to tracks with the Hungarian
algorithm on a cost mixing box IoU and normalised keypoint distance, after a constant-velocity
prediction of each track, and keeps a track alive through brief misses. Given the frame size,
it also knows that people enter and leave across the frame's border (``border_gap_s``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.tracking.geometry import (
    BODY_JOINTS,
    BORDER_GAP_S,
    box_of,
    in_frame_fraction,
    known_size,
    landmark_box,
    torso_length,
    touches_border,
)
from skeleton.types import PersonPose

__all__ = ["TrackUpdate", "TrackedPerson", "Tracker", "TrackerConfig"]


@dataclass(frozen=True, slots=True)
class TrackedPerson:
    """A pose with the id of the track it belongs to. ``confirmed``: the track has passed its
    probation (`TrackerConfig.confirm_s`); a tentative one may still be a phantom."""

    track_id: int
    pose: PersonPose
    confirmed: bool = True


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
    # A track is *tentative* until confirmed: seen in at least ``confirm_hits`` frames spanning
    # at least ``confirm_s`` seconds less half a frame (probation, as SORT's min_hits or
    # DeepStream's probation age; seconds mean the same at any frame rate). A stream reports only
    # confirmed tracks, from confirmation on; a finished clip keeps only people with a confirmed
    # track, from their first frame (`perception.tracking.clip_tracks.clip_tracks`). A tentative
    # track is continued only by the strict first pass, and it closes after more than
    # ``tentative_max_misses`` updates in a row without a match (counted in updates, so it means
    # the same at any analysed frame rate):
    # a phantom skeleton flickers and never confirms (the garbled skeleton over the weightlifter
    # of stgcn_clean_and_jerk: 7 frames in 0.3 s; the partial skeleton at the bottom edge of UP-Fall
    # Activity5/Trial2Cam1: 10 frames in 1.5 s). When a blip could wait a full ``max_missed_s``
    # for anyone nearby, a passer-by seen for 2 frames behind a glass wall took the id of the
    # actor re-entering 0.44 s later and became the start of the actor's track (UP-Fall
    # Activity6/Trial2Cam1, docs/pose_notes.md), whose fill-in read as a fall. ``confirm_s``:
    # chosen by cross-validation on the labelled clips (docs/tracking.md, "Round 4"),
    # ``SKELACT_TRACK_CONFIRM_S``.
    confirm_hits: int = 3
    confirm_s: float = 0.2
    # 0 since round 5 (a tentative track closes on its first miss: its hits must be consecutive, as
    # SORT's hit streak): chosen by cross-validation on saved raw poses of the clip view and of
    # streams at 10 fps on one and on two pose lanes (docs/tracking.md, "Round 5"); on two lanes
    # each lane's estimator keeps its own phantom skeleton in every other frame, which a gap of 1-2
    # misses let confirm (UP-Fall Activity5/Trial2Cam1: 22 frames).
    tentative_max_misses: int = 0
    # ... and only with a detection whose torso (shoulder centre to hip centre) is within this
    # factor of its own. MediaPipe's first skeletons of a person entering the view can be
    # misplaced: the walker re-entering UP-Fall Activity6/Trial1Cam1 was two frames of a small
    # skeleton above his shoulder (torso 54-75 px), then the right one (131 px, hip 134 px
    # lower), and that drop read as a fall. Confirmed tracks are not gated: a falling person's
    # torso foreshortens to 8 px and grows back (UP-Fall Cam2 falls).
    tentative_max_scale: float = 2.0
    # A tentative track does not confirm in a frame where its box lies this much (intersection over
    # the smaller of the two boxes) inside the box of a confirmed track seen in the same frame: a
    # second skeleton drawn over a person already tracked (a body inside another body; MediaPipe
    # put one on the actor lying head-to-camera in UP-Fall Activity4/Trial2Cam2 for 20 frames). It
    # confirms once it stands apart. None: no such test. Chosen by cross-validation on saved raw
    # poses (docs/tracking.md, "Round 6": clip view + the stream's JPEG frames at 10 fps on one
    # and two lanes): half A picks 0.2-0.3 (the 12-14-frame skeleton along the lifter's barbell in
    # stgcn_clean_and_jerk, 0.36-0.50 inside him), half B 0.2-0.6; 0.25, the middle of both.
    inside_confirmed: float | None = 0.25
    # A tentative track does not confirm in a frame where its skeleton is mostly beyond the frame's
    # border (less than ``border_cut_in_frame`` of its landmark box inside) and scores below
    # ``border_cut_score``: MediaPipe completing a body below the bottom edge (UP-Fall
    # Activity5/Trial2Cam1 streamed at 15 fps: 14 frames of a 0.28-0.39-score skeleton, 0.3 of it in
    # the frame, beside the actor lying there). A person walking in is in view or scores higher, and
    # confirms as they come in. None: no such test. Chosen by cross-validation on saved raw poses
    # (docs/tracking.md, "Round 7": clip view + JPEG stream at 10 fps on 1 and 2 lanes and 15 fps):
    # both halves pick 0.6 / 0.4.
    border_cut_in_frame: float | None = 0.6
    border_cut_score: float = 0.4
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
    confirmed: bool = False  # passed probation (`TrackerConfig.confirm_s`), for good
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

    def expected(self, timestamp_s: float) -> tuple[PersonPose, ...]:
        """Where the confirmed tracks expect their people at ``timestamp_s``: each one's latest
        pose moved by its velocity (at most ``max_prediction_s`` ahead). A pose estimator that
        lost someone (another pose lane saw the frames in between, or the detector missed a small
        or partly hidden person) looks there (`perception.pose.estimator.PoseEstimator.estimate`)."""
        cfg = self.config
        out = []
        for tr in self._tracks.values():
            if not tr.confirmed:
                continue
            xy = tr.predicted_xy(float(timestamp_s), cfg.max_prediction_s)
            image = tr.pose.image.copy()
            image[:, :2] = xy
            out.append(replace(tr.pose, image=image, box=landmark_box(image)))
        return tuple(out)

    def update(
        self, poses: Sequence[PersonPose], timestamp_s: float, frame_size: tuple[float, float] | None = None
    ) -> TrackUpdate:
        """Match this frame's poses to tracks. ``frame_size`` (width, height) of the analysed frame
        turns on the border rule (``TrackerConfig.border_gap_s``); None or a zero side: unknown."""
        frame_size = known_size(frame_size)
        cfg = self.config
        t = float(timestamp_s)
        if self._last_t is not None and t < self._last_t:
            t = self._last_t  # tolerate clock jitter; never predict backwards
        # probation may end half a frame early: frames stamped on arrival (a client that sends no
        # capture times) come 0.1 s +- a few ms apart at 10 fps, and three of them then spanned
        # 0.19x s, so each person was reported a frame late (mmaction2 stream@10, 2026-12-03). With
        # exact times at 10, 15, 18 and 30 fps this confirms on the same frame as without slack.
        slack = 0.0 if self._last_t is None else min(0.5 * (t - self._last_t), 0.5 * cfg.confirm_s)
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
        seen: list[tuple[_Track, PersonPose]] = []
        for r, c in pairs:
            self._absorb(track_list[r], poses[c], t)
            seen.append((track_list[r], poses[c]))
        for j, pose in enumerate(poses):
            if j not in matched_dets:
                track = _Track(next(self._ids), pose, t, t)
                self._tracks[track.track_id] = track
                seen.append((track, pose))
        covered = self._covered(seen) | self._cut_by_border(seen, frame_size)
        out: list[TrackedPerson] = []
        for track, pose in seen:
            track.confirmed = track.confirmed or (
                track.hits >= cfg.confirm_hits
                and t - track.first_seen >= cfg.confirm_s - slack - 1e-9
                and track.track_id not in covered
            )
            out.append(TrackedPerson(track.track_id, pose, track.confirmed))
        closed = tuple(tid for tid, tr in self._tracks.items() if self._expired(tr, t))
        for tid in closed:
            del self._tracks[tid]
        out.sort(key=lambda p: p.track_id)
        return TrackUpdate(t, tuple(out), closed)

    def _covered(self, seen: list[tuple[_Track, PersonPose]]) -> set[int]:
        """Ids of this frame's tentative tracks whose box lies inside a confirmed track's box
        (``TrackerConfig.inside_confirmed``)."""
        limit = self.config.inside_confirmed
        if limit is None:
            return set()
        sure = [p.box for tr, p in seen if tr.confirmed]
        return {
            tr.track_id
            for tr, p in seen
            if not tr.confirmed and any(p.box.overlap_of_smaller(b) >= limit for b in sure)
        }

    def _cut_by_border(
        self, seen: list[tuple[_Track, PersonPose]], frame_size: tuple[float, float] | None
    ) -> set[int]:
        """Ids of this frame's tentative tracks whose low-score skeleton lies mostly beyond the
        frame's border (``TrackerConfig.border_cut_in_frame``)."""
        cfg = self.config
        if cfg.border_cut_in_frame is None or frame_size is None:
            return set()
        return {
            tr.track_id
            for tr, p in seen
            if not tr.confirmed
            and p.score < cfg.border_cut_score
            and in_frame_fraction(p.image[:, :2], frame_size) < cfg.border_cut_in_frame
        }

    def _expired(self, track: _Track, t: float) -> bool:
        """Unseen for longer than its kind of track may wait (tentative tracks wait less)."""
        cfg = self.config
        if not track.confirmed and track.misses > cfg.tentative_max_misses:
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
        tentative = np.array([not tr.confirmed for tr in tracks])
        if tentative.any():
            pose_torso = torso_length(np.stack([p.image for p in poses]))
            for i in np.flatnonzero(tentative):
                ratio = pose_torso / max(float(torso_length(tracks[i].pose.image)), 1e-6)
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
        free_tracks = [i for i in range(len(tracks)) if i not in matched and tracks[i].confirmed]
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
            pred_box = box_of(pred, tr_vis)
            scale = max(np.hypot(pred_box.width, pred_box.height), 1.0)
            for j, pose in enumerate(poses):
                iou = pred_box.iou(box_of(pose.image[:, :2], pose.visibility >= cfg.min_visibility))
                both = tr_vis[joints] & (pose.visibility[joints] >= cfg.min_visibility)
                sel = np.array(joints)[both] if both.sum() >= 3 else np.array(joints)
                d = np.linalg.norm(pred[sel] - pose.image[sel, :2], axis=1)
                kpt = float(np.clip(np.nanmedian(d) / scale, 0.0, 1.0)) if np.isfinite(d).any() else 1.0
                cost[i, j] = cfg.iou_weight * (1.0 - iou) + cfg.keypoint_weight * kpt
        return cost / max(cfg.iou_weight + cfg.keypoint_weight, 1e-9)
