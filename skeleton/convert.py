"""Layout conversion from MediaPipe-33 landmarks to the other layouts.

Every conversion is a fixed linear map (a (V_out, 33) weight matrix), so it applies to a
single frame or a whole sequence with one matmul and NaNs (missing joints) propagate.
"""

from __future__ import annotations

import numpy as np

from skeleton.layouts import COCO_17, KINECT_20, MEDIAPIPE_33, JointLayout

# Kinect v1's spine joint sits about a fifth of the way from the hip centre to the shoulder
# centre (measured on UTD-MHAD: 0.19).
_SPINE_FRACTION = 0.2


def _mp(*names: str) -> dict[int, float]:
    """Equal weights over MediaPipe landmarks given by name."""
    return {MEDIAPIPE_33.index(n): 1.0 / len(names) for n in names}


def _kinect_recipe() -> list[dict[int, float]]:
    hip_c = _mp("left_hip", "right_hip")
    sh_c = _mp("left_shoulder", "right_shoulder")
    spine = {k: (1 - _SPINE_FRACTION) * hip_c.get(k, 0.0) + _SPINE_FRACTION * sh_c.get(k, 0.0)
             for k in set(hip_c) | set(sh_c)}
    by_name = {
        "head": _mp("left_ear", "right_ear"),
        "shoulder_center": sh_c,
        "spine": spine,
        "hip_center": hip_c,
        "left_hand": _mp("left_pinky", "left_index"),
        "right_hand": _mp("right_pinky", "right_index"),
        "left_foot": _mp("left_foot_index"),
        "right_foot": _mp("right_foot_index"),
    }
    return [by_name.get(j, _mp(j) if j in MEDIAPIPE_33.joints else {}) for j in KINECT_20.joints]


def _matrix(recipe: list[dict[int, float]]) -> np.ndarray:
    m = np.zeros((len(recipe), MEDIAPIPE_33.num_joints), np.float32)
    for row, weights in enumerate(recipe):
        if not weights:
            raise ValueError(f"no MediaPipe source for output joint {row}")
        for col, w in weights.items():
            m[row, col] = w
    return m


_FROM_MEDIAPIPE: dict[str, np.ndarray] = {
    MEDIAPIPE_33.name: np.eye(MEDIAPIPE_33.num_joints, dtype=np.float32),
    KINECT_20.name: _matrix(_kinect_recipe()),
    COCO_17.name: _matrix([_mp(j) for j in COCO_17.joints]),
}


def conversion_matrix(target: JointLayout) -> np.ndarray:
    """(V_target, 33) matrix mapping MediaPipe-33 joints to ``target`` joints."""
    try:
        return _FROM_MEDIAPIPE[target.name]
    except KeyError:
        raise ValueError(f"no conversion from mediapipe33 to {target.name}") from None


def from_mediapipe(joints: np.ndarray, target: JointLayout) -> np.ndarray:
    """Convert (..., 33, C) MediaPipe joints to (..., V_target, C). A missing (NaN) landmark makes
    only the target joints built from it NaN (a plain product would blank the whole frame: 0 * NaN)."""
    if joints.shape[-2] != MEDIAPIPE_33.num_joints:
        raise ValueError(f"expected 33 MediaPipe joints on axis -2, got shape {joints.shape}")
    m = conversion_matrix(target)
    missing = ~np.isfinite(joints)
    if not missing.any():
        return np.einsum("vj,...jc->...vc", m, joints).astype(np.float32)
    out = np.einsum("vj,...jc->...vc", m, np.where(missing, 0.0, joints)).astype(np.float32)
    out[np.einsum("vj,...jc->...vc", (m != 0).astype(np.float32), missing.astype(np.float32)) > 0] = np.nan
    return out
