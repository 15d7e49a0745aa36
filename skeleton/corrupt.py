"""Damaged skeletons (numpy only): missing joints, a missing limb, dropped frames, positional noise.

Real skeletons are damaged -- joints occluded or cut by the frame's border, frames dropped by a
busy stream, jittery estimates. These functions damage *raw* joints ((T, V, C) canonical joints in
a layout, before ``skeleton.preprocess``), so a damaged sample goes through the same gap filling
and normalisation as a served one: a missing joint or frame is NaN, as the service marks an
unseen one. Used to measure robustness (``training.robustness``) and as training augmentation
(``training.config.CorruptConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from skeleton.layouts import JointLayout

Kind = Literal["clean", "joints", "limb", "frames", "noise"]
LIMBS = ("left_arm", "right_arm", "left_leg", "right_leg")
_ARM = ("elbow", "wrist", "hand", "pinky", "index", "thumb")
_LEG = ("knee", "ankle", "foot", "heel")


def limb_joints(layout: JointLayout, limb: str) -> tuple[int, ...]:
    """Joints of ``limb`` (e.g. 'left_arm': elbow, wrist, hand / fingers) in ``layout``; the
    shoulder or hip stays (it also belongs to the trunk)."""
    side, part = limb.split("_")
    names = _ARM if part == "arm" else _LEG
    prefix = side + "_"
    joints = tuple(i for i, j in enumerate(layout.joints)
                   if j.startswith(prefix) and j[len(prefix):].split("_")[0] in names)
    if not joints:
        raise ValueError(f"layout {layout.name} has no {limb}")
    return joints


def drop_joints(joints: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy with ``round(fraction * V)`` joints, chosen anew in every frame, set to NaN."""
    out = np.array(joints, np.float32, copy=True)
    t, v = out.shape[:2]
    k = round(fraction * v)
    if k <= 0:
        return out
    order = np.argsort(rng.random((t, v)), axis=1)[:, :k]
    out[np.arange(t)[:, None], order] = np.nan
    return out


def drop_limb(joints: np.ndarray, layout: JointLayout, limb: str) -> np.ndarray:
    """A copy with every joint of ``limb`` NaN in every frame."""
    out = np.array(joints, np.float32, copy=True)
    out[:, list(limb_joints(layout, limb))] = np.nan
    return out


def drop_frames(joints: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy with ``round(fraction * T)`` frames, chosen at random, NaN (the time axis is kept:
    a dropped frame of a stream is a missing sample, not a faster clip). The first and the last
    frame stay, so the clip keeps its extent."""
    out = np.array(joints, np.float32, copy=True)
    t = out.shape[0]
    k = min(round(fraction * t), max(t - 2, 0))
    if k <= 0:
        return out
    drop = 1 + rng.permutation(t - 2)[:k]
    out[drop] = np.nan
    return out


def body_size(joints: np.ndarray, layout: JointLayout) -> float:
    """Median shoulder-centre to hip-centre distance over the frames (the trunk length)."""
    def centre(names: tuple[str, ...]) -> np.ndarray:
        idx = [layout.index(n) for n in names if n in layout.joints]
        return np.asarray(joints, np.float64)[:, idx].mean(axis=1)

    sh = centre(("shoulder_center",)) if "shoulder_center" in layout.joints else centre(
        ("left_shoulder", "right_shoulder"))
    hip = centre(("hip_center",)) if "hip_center" in layout.joints else centre(("left_hip", "right_hip"))
    d = np.linalg.norm(sh - hip, axis=-1)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else 0.0


def add_noise(joints: np.ndarray, sigma: float, rng: np.random.Generator, layout: JointLayout) -> np.ndarray:
    """A copy with Gaussian noise of ``sigma`` trunk lengths added to every coordinate."""
    out = np.array(joints, np.float32, copy=True)
    scale = sigma * body_size(out, layout)
    if scale <= 0:
        return out
    return (out + rng.normal(0.0, scale, size=out.shape)).astype(np.float32)


@dataclass(frozen=True)
class Corruption:
    """One damage condition: ``kind`` at ``level`` (a fraction for joints / frames, trunk lengths
    for noise; ``limb`` names the limb, or 'random' for one drawn per sample)."""

    kind: Kind
    level: float = 0.0
    limb: str = "random"

    @property
    def name(self) -> str:
        if self.kind == "clean":
            return "clean"
        if self.kind == "limb":
            return f"limb ({self.limb})"
        if self.kind == "noise":
            return f"noise {self.level:g}"
        return f"{self.kind} {round(self.level * 100)} %"

    def apply(self, joints: np.ndarray, layout: JointLayout, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "joints":
            return drop_joints(joints, self.level, rng)
        if self.kind == "limb":
            limb = LIMBS[int(rng.integers(len(LIMBS)))] if self.limb == "random" else self.limb
            return drop_limb(joints, layout, limb)
        if self.kind == "frames":
            return drop_frames(joints, self.level, rng)
        if self.kind == "noise":
            return add_noise(joints, self.level, rng, layout)
        return np.array(joints, np.float32, copy=True)


# The conditions measured in docs/robustness.md.
CONDITIONS: tuple[Corruption, ...] = (
    Corruption("clean"),
    Corruption("joints", 0.1), Corruption("joints", 0.2), Corruption("joints", 0.3),
    Corruption("limb"),
    Corruption("frames", 0.1), Corruption("frames", 0.3),
    Corruption("noise", 0.05), Corruption("noise", 0.1),
)
