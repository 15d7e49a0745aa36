"""The one code path from raw joints to a model input tensor, shared by training and serving.

Canonical axes everywhere after this module's first step: x to the image's right, y up,
z away from the camera. Steps: source axes -> canonical, layout conversion, resampling to
the model's frame rate, gap filling, normalisation (centre, scale, optional view alignment),
then (T, V, C) -> (C, T, V). Missing data is NaN: a whole unseen frame, or single joints
(occluded, damaged: ``skeleton.corrupt``); both are filled joint by joint.
"""

from __future__ import annotations

import numpy as np

from skeleton.convert import from_mediapipe
from skeleton.layouts import JointLayout, get_layout
from skeleton.manifest import InputSpec, NormalizationSpec, WindowSpec
from skeleton.types import SkeletonSequence

_EPS = 1e-6


def kinect_to_canonical(joints: np.ndarray) -> np.ndarray:
    """Kinect v1 camera space (x to the sensor's left, y up, z forward) -> canonical axes."""
    out = np.asarray(joints, np.float32).copy()
    out[..., 0] *= -1.0
    return out


def mediapipe_to_canonical(seq: SkeletonSequence, coordinates: str, frame_height: float = 1.0) -> np.ndarray:
    """(T, 33, 3) canonical joints from MediaPipe world (metres) or image (pixels) landmarks.

    Image landmarks are divided by the frame height so their unit does not depend on resolution.
    """
    if coordinates == "world":
        src = seq.world
        scale = 1.0
    elif coordinates == "image":
        src = seq.image
        scale = 1.0 / max(frame_height, 1.0)
    else:
        raise ValueError(f"unknown coordinates {coordinates!r}; use 'world' or 'image'")
    out = src.astype(np.float32) * scale
    out[..., 1] *= -1.0  # MediaPipe's y points down
    return out


def sequence_to_layout(seq: SkeletonSequence, spec: InputSpec, frame_height: float = 1.0) -> np.ndarray:
    """MediaPipe sequence -> (T, V, 3) canonical joints in the model's layout (NaN where missed)."""
    canonical = mediapipe_to_canonical(seq, spec.coordinates, frame_height)
    return from_mediapipe(canonical, get_layout(spec.layout))


def resample_window(
    timestamps: np.ndarray, joints: np.ndarray, window: WindowSpec, end_time: float | None = None,
    max_gap_s: float = 1.0,
) -> np.ndarray:
    """Sample ``window.length`` frames at ``window.fps`` ending at ``end_time`` (default: last frame).

    Linear interpolation between observed frames; before the first or after the last observed
    frame the nearest one is held. Sample times farther than ``max_gap_s`` from any observed
    frame stay NaN (filled later). Returns (length, V, C).
    """
    t = np.asarray(timestamps, np.float64)
    end = float(t[-1]) if end_time is None else float(end_time)
    sample_t = end - (window.length - 1 - np.arange(window.length)) / window.fps
    return _interp(t, joints, sample_t, max_gap_s)


def resample_uniform(joints: np.ndarray, length: int) -> np.ndarray:
    """Resample a whole clip to ``length`` frames evenly spread over it (trimmed-clip protocol)."""
    n = joints.shape[0]
    src_t = np.arange(n, dtype=np.float64)
    sample_t = np.linspace(0, n - 1, length)
    return _interp(src_t, joints, sample_t, max_gap_s=np.inf)


def _interp(t: np.ndarray, joints: np.ndarray, sample_t: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Per coordinate column, linear interpolation between the frames where it was observed; a
    sample farther than ``max_gap_s`` from that column's observations stays NaN. Columns with the
    same observations (on undamaged input: all of them) share one support."""
    flat = joints.reshape(joints.shape[0], -1)
    finite = np.isfinite(flat)
    out = np.full((sample_t.shape[0], flat.shape[1]), np.nan, np.float32)
    groups: dict[bytes, list[int]] = {}
    for k in range(flat.shape[1]):
        groups.setdefault(np.packbits(finite[:, k]).tobytes(), []).append(k)
    for cols in groups.values():
        observed = finite[:, cols[0]]
        if not observed.any():
            continue
        to = t[observed]
        for k in cols:
            out[:, k] = np.interp(sample_t, to, flat[observed, k])
        nearest_gap = np.min(np.abs(sample_t[:, None] - to[None, :]), axis=1)
        out[np.ix_(nearest_gap > max_gap_s, cols)] = np.nan
    return out.reshape((sample_t.shape[0], *joints.shape[1:]))


def fill_missing(joints: np.ndarray, layout: JointLayout | None = None) -> np.ndarray:
    """Fill NaNs: each joint holds its nearest observed frame; a joint never observed in the window
    sits on its parent joint (``layout.parents``, a zero-length bone; the centre joint, on the mean
    of the others); without a layout it becomes zeros, as does an empty window."""
    out = np.array(joints, np.float32, copy=True)
    seen = np.isfinite(out).all(axis=2)  # (T, V)
    if not seen.any():
        return np.zeros_like(out)
    frames = np.arange(out.shape[0])
    for v in np.flatnonzero(seen.any(axis=0) & ~seen.all(axis=0)):
        idx = np.flatnonzero(seen[:, v])
        nearest = idx[np.abs(frames[:, None] - idx[None, :]).argmin(axis=1)]
        out[~seen[:, v], v] = out[nearest[~seen[:, v]], v]
    never = ~seen.any(axis=0)
    if never.any() and layout is not None:
        centre = layout.centre
        for v in sorted(np.flatnonzero(never), key=lambda j: layout.hop_distance[j, centre]):
            if v == centre:
                out[:, v] = out[:, ~never].mean(axis=1)
            else:
                out[:, v] = out[:, layout.parents[v]]
    return np.nan_to_num(out, nan=0.0)


def normalize(joints: np.ndarray, spec: NormalizationSpec, layout: JointLayout) -> np.ndarray:
    """Centre, scale and optionally view-align (T, V, 3) canonical joints. No NaNs allowed."""
    out = np.array(joints, np.float32, copy=True)
    c = layout.index(spec.centre_joint)
    if spec.centre_mode == "per_frame":
        out -= out[:, c : c + 1, :]
    else:
        out -= out[0, c][None, None, :]
    if spec.align_view:
        out = _align_view(out, layout)
    if spec.scale_joints is not None:
        a, b = (layout.index(j) for j in spec.scale_joints)
        size = float(np.linalg.norm(out[:, a] - out[:, b], axis=-1).mean())
        if size > _EPS:
            out /= size
    return out


def _align_view(joints: np.ndarray, layout: JointLayout) -> np.ndarray:
    """Rotate about the vertical (y) axis so the first frame's left->right hip line is along -x.

    Rotating about y only keeps gravity's direction, which falls and lying down depend on.
    """
    names = layout.joints
    left = names.index("left_hip")
    right = names.index("right_hip")
    d = joints[0, right] - joints[0, left]
    angle = np.arctan2(d[2], d[0])  # angle of the hip line in the x-z plane
    target = np.pi  # right hip to the image's left (person facing the camera)
    theta = target - angle
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.array([[cos, 0.0, -sin], [0.0, 1.0, 0.0], [sin, 0.0, cos]], np.float32)
    return joints @ rot.T


def to_model_input(joints: np.ndarray) -> np.ndarray:
    """(T, V, C) -> (C, T, V) float32, the layout every model in ``models/`` takes."""
    return np.ascontiguousarray(np.transpose(joints, (2, 0, 1)), dtype=np.float32)


def prepare_window(
    timestamps: np.ndarray, layout_joints: np.ndarray, spec: InputSpec, end_time: float | None = None
) -> np.ndarray:
    """Timestamped (T, V, 3) joints in the model layout -> one (C, L, V) model input window."""
    window = resample_window(timestamps, layout_joints, spec.window, end_time)
    layout = get_layout(spec.layout)
    return to_model_input(normalize(fill_missing(window, layout), spec.normalization, layout))


def prepare_clip(layout_joints: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A whole trimmed clip (T, V, 3) -> (C, L, V): the UTD-MHAD whole-sequence protocol."""
    window = resample_uniform(layout_joints, spec.window.length)
    layout = get_layout(spec.layout)
    return to_model_input(normalize(fill_missing(window, layout), spec.normalization, layout))
