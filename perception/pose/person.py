"""`PersonPose` from landmarks (an estimator's, or stored ones), and telling duplicates apart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skeleton.types import MEDIAPIPE_JOINTS, BoundingBox, PersonPose

__all__ = ["make_person_pose", "nms_poses", "pose_from_pixels"]


def _box_from_image(image: np.ndarray, width: int, height: int) -> BoundingBox:
    """Landmark bounding box clipped to the frame (landmarks may be predicted off-frame)."""
    x = np.clip(image[:, 0], 0.0, float(width))
    y = np.clip(image[:, 1], 0.0, float(height))
    return BoundingBox(float(x.min()), float(y.min()), float(x.max()), float(y.max()))


def make_person_pose(
    norm_xyz: np.ndarray,
    world: np.ndarray | None,
    visibility: np.ndarray,
    width: int,
    height: int,
    score: float | None = None,
) -> PersonPose:
    """PersonPose from normalised MediaPipe landmarks: x*W, y*H, z*W (z shares x's pixel scale)."""
    image = np.empty((MEDIAPIPE_JOINTS, 3), np.float32)
    image[:, 0] = norm_xyz[:, 0] * width
    image[:, 1] = norm_xyz[:, 1] * height
    image[:, 2] = norm_xyz[:, 2] * width
    w = np.full((MEDIAPIPE_JOINTS, 3), np.nan, np.float32) if world is None else world.astype(np.float32)
    s = float(visibility.mean()) if score is None else float(score)
    return PersonPose(image, w, visibility.astype(np.float32), _box_from_image(image, width, height), s)


def pose_from_pixels(
    image: np.ndarray, world: np.ndarray, visibility: np.ndarray, width: int, height: int
) -> PersonPose:
    """Rebuild a PersonPose from stored pixel landmarks (e.g. a skeleton cache) as `estimate` would.

    The score is the mean visibility times the fraction of landmarks inside the frame, which is
    what the full-frame estimator reports.
    """
    img = np.asarray(image, np.float32)
    inside = (img[:, 0] >= 0) & (img[:, 0] <= width) & (img[:, 1] >= 0) & (img[:, 1] <= height)
    vis = np.asarray(visibility, np.float32)
    score = float(vis.mean()) * float(inside.mean())
    return PersonPose(img, np.asarray(world, np.float32), vis, _box_from_image(img, width, height), score)


def nms_poses(
    poses: Sequence[PersonPose], iou: float = 0.6, keypoint_distance: float = 0.15
) -> list[PersonPose]:
    """Greedy duplicate removal, highest score first.

    Two poses are the same person when their boxes overlap by IoU >= ``iou``, or when the median
    distance between their body joints is below ``keypoint_distance`` times the smaller box's
    diagonal. The second test catches a skeleton cut by a tile edge (its box differs, its visible
    joints coincide) and the Tasks tracker's rare collapse of two ROIs onto one person, while two
    different people standing close keep distinct joints and both survive.
    """
    order = sorted(range(len(poses)), key=lambda i: -poses[i].score)
    kept: list[PersonPose] = []
    for i in order:
        p = poses[i]
        if not any(_same_person(p, k, iou, keypoint_distance) for k in kept):
            kept.append(p)
    return kept


_BODY = np.array([0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])


def _same_person(a: PersonPose, b: PersonPose, iou: float, keypoint_distance: float) -> bool:
    if a.box.iou(b.box) >= iou:
        return True
    small = a.box if a.box.area <= b.box.area else b.box
    diag = max(float(np.hypot(small.width, small.height)), 1.0)
    d = np.linalg.norm(a.image[_BODY, :2] - b.image[_BODY, :2], axis=1)
    return bool(np.median(d) < keypoint_distance * diag)
