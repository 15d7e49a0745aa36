"""Typed, shape-checked objects passed between pipeline stages.

Third-party types (MediaPipe results, ONNX Runtime values) never cross a stage boundary:
adapters convert them into these small numpy-backed objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MEDIAPIPE_JOINTS = 33


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """Axis-aligned box in pixels (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    def intersection(self, other: BoundingBox) -> float:
        """Area the two boxes share."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        return ix * iy

    def iou(self, other: BoundingBox) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def overlap_of_smaller(self, other: BoundingBox) -> float:
        """Shared area over the smaller box's area: 1 when one box lies wholly inside the other."""
        small = min(self.area, other.area)
        return self.intersection(other) / small if small > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PersonPose:
    """One person's MediaPipe-33 landmarks in one frame.

    image: (33, 3) float32 -- x, y in pixels of the analysed frame, z in the same pixel
        scale as x (MediaPipe's relative depth times frame width).
    world: (33, 3) float32 -- metres, hip-centred, MediaPipe world axes
        (x right, y down, z away from camera); NaN when the estimator gives none.
    visibility: (33,) float32 in [0, 1].
    """

    image: np.ndarray
    world: np.ndarray
    visibility: np.ndarray
    box: BoundingBox
    score: float = 1.0

    def __post_init__(self) -> None:
        for name, arr, shape in (
            ("image", self.image, (MEDIAPIPE_JOINTS, 3)),
            ("world", self.world, (MEDIAPIPE_JOINTS, 3)),
            ("visibility", self.visibility, (MEDIAPIPE_JOINTS,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"PersonPose.{name} must have shape {shape}, got {arr.shape}")


@dataclass(frozen=True, slots=True)
class SkeletonSequence:
    """One person's MediaPipe-33 landmarks over time (a track, or a cached clip).

    timestamps: (T,) seconds, increasing. image/world: (T, 33, 3); visibility: (T, 33).
    A frame where the person was not seen is all-NaN in image and world.
    """

    timestamps: np.ndarray
    image: np.ndarray
    world: np.ndarray
    visibility: np.ndarray

    def __post_init__(self) -> None:
        t = self.timestamps.shape[0]
        if self.timestamps.shape != (t,):
            raise ValueError(f"timestamps must be 1-D, got {self.timestamps.shape}")
        for name, arr, shape in (
            ("image", self.image, (t, MEDIAPIPE_JOINTS, 3)),
            ("world", self.world, (t, MEDIAPIPE_JOINTS, 3)),
            ("visibility", self.visibility, (t, MEDIAPIPE_JOINTS)),
        ):
            if arr.shape != shape:
                raise ValueError(f"SkeletonSequence.{name} must have shape {shape}, got {arr.shape}")

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @staticmethod
    def from_poses(timestamps: list[float], poses: list[PersonPose | None]) -> SkeletonSequence:
        """Stack per-frame poses; ``None`` marks a frame where the person was missed."""
        n = len(poses)
        image = np.full((n, MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
        world = np.full((n, MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
        vis = np.zeros((n, MEDIAPIPE_JOINTS), np.float32)
        for i, p in enumerate(poses):
            if p is not None:
                image[i], world[i], vis[i] = p.image, p.world, p.visibility
        return SkeletonSequence(np.asarray(timestamps, np.float64), image, world, vis)
