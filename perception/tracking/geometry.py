"""Landmark geometry the tracker and the clip's track stitching share: body joints, torso
length, landmark boxes and the frame border rule."""

from __future__ import annotations

import numpy as np

from skeleton.types import BoundingBox

__all__ = [
    "BODY_JOINTS",
    "BORDER_GAP_S",
    "EDGE_MARGIN",
    "box_of",
    "known_size",
    "landmark_box",
    "torso_length",
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
# how long a track must have been unseen before the border rule applies (tracker.TrackerConfig)
BORDER_GAP_S = 0.25


def touches_border(xy: np.ndarray, frame_size: tuple[float, float], margin: float = EDGE_MARGIN) -> bool:
    """Whether a pose's image landmarks (33, 2) reach the frame's border (or beyond it)."""
    width, height = frame_size
    box = landmark_box(xy)
    mx, my = margin * width, margin * height
    return bool(box.x0 <= mx or box.y0 <= my or box.x1 >= width - mx or box.y1 >= height - my)


def in_frame_fraction(xy: np.ndarray, frame_size: tuple[float, float]) -> float:
    """Share of a pose's landmark box (image landmarks (33, 2), MediaPipe also places the ones it
    cannot see) that lies inside the frame: about 1 for a body in view, low for one drawn mostly
    beyond the border."""
    width, height = frame_size
    box = landmark_box(xy)
    area = max(box.x1 - box.x0, 1e-6) * max(box.y1 - box.y0, 1e-6)
    inside_w = max(0.0, min(box.x1, width) - max(box.x0, 0.0))
    inside_h = max(0.0, min(box.y1, height) - max(box.y0, 0.0))
    return float(inside_w * inside_h / area)


def known_size(frame_size: tuple[float, float] | None) -> tuple[float, float] | None:
    """The frame size, or None when it is unknown (not given, or a zero side)."""
    return frame_size if frame_size is not None and all(frame_size) else None


def torso_length(image: np.ndarray) -> np.ndarray:
    """Shoulder centre to hip centre in pixels, for landmarks (..., 33, C): one value per pose."""
    torso = image[..., TORSO_JOINTS, :2].astype(np.float64)
    return np.linalg.norm(torso[..., :2, :].mean(axis=-2) - torso[..., 2:, :].mean(axis=-2), axis=-1)


def box_of(xy: np.ndarray, mask: np.ndarray) -> BoundingBox:
    pts = xy[mask] if mask.any() else xy
    return BoundingBox(
        float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())
    )


def landmark_box(image: np.ndarray) -> BoundingBox:
    """Box of a pose's finite image landmarks (33, >= 2)."""
    xy = image[:, :2]
    return box_of(xy, np.isfinite(xy).all(axis=1))
