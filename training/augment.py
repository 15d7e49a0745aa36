"""Training-time augmentation on canonical joints (before the shared normalisation) and on inputs.

Geometric changes and damage (``corrupt``: missing joints, limbs and frames, positional noise) are
applied to the raw (T, V, 3) canonical joints so that the normalisation and gap filling the
service runs (``skeleton.preprocess``) see exactly the kind of variation they will meet: a
different camera yaw / tilt, body proportions, speed and cut points, occlusion, dropped frames.
Joint noise is added to the normalised (C, T, V) input so its size is relative to the body.
"""

from __future__ import annotations

import numpy as np

from skeleton import corrupt as damage
from skeleton.layouts import JointLayout
from skeleton.manifest import InputSpec
from skeleton.preprocess import prepare_window
from training.config import AugmentConfig, CorruptConfig


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation about y (vertical, yaw), then x (pitch) and z (roll); radians."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cz, sz = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ rx @ ry).astype(np.float32)


def geometric(joints: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
              layout: JointLayout) -> np.ndarray:
    """Random rotation (about the body centre), per-axis scaling and optional mirroring."""
    out = np.array(joints, np.float32, copy=True)
    finite = np.isfinite(out).all(axis=(1, 2))
    if not finite.any():
        return out
    origin = out[finite][0, layout.centre].copy()
    out -= origin
    if cfg.bones:
        out = rescale_bones(out, rng.uniform(1 - cfg.bones, 1 + cfg.bones, size=layout.num_joints), layout)
    if cfg.yaw_deg or cfg.tilt_deg:
        yaw, pitch, roll = np.deg2rad([
            rng.uniform(-cfg.yaw_deg, cfg.yaw_deg),
            rng.uniform(-cfg.tilt_deg, cfg.tilt_deg),
            rng.uniform(-cfg.tilt_deg, cfg.tilt_deg),
        ])
        out = out @ rotation_matrix(yaw, pitch, roll).T
    if cfg.scale:
        out = out * rng.uniform(1 - cfg.scale, 1 + cfg.scale, size=3).astype(np.float32)
    if cfg.mirror and layout.mirror_pairs and rng.random() < 0.5:
        out[..., 0] *= -1
        perm = np.arange(layout.num_joints)
        for a, b in layout.mirror_pairs:
            perm[a], perm[b] = b, a
        out = out[:, perm]
    return out + origin


LIMB_CHAINS = {  # per side: an arm chain and the leg chain it is swapped with, root first
    side: ((f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist", f"{side}_hand"),
           (f"{side}_hip", f"{side}_knee", f"{side}_ankle", f"{side}_foot"))
    for side in ("left", "right")
}


def swap_limbs(joints: np.ndarray, layout: JointLayout) -> np.ndarray:
    """Arms and legs swapped: each side's arm chain, relative to its shoulder, moved onto the hip
    (scaled to the leg's length) and the leg chain onto the shoulder; an arm gesture becomes a leg
    gesture. The embedding trains on these as extra actions (``embedding.limb_swap``) so its leg
    joints learn to tell motions apart, which actions it never saw (legs, whole body) need."""
    out = np.array(joints, np.float32, copy=True)
    for arm_names, leg_names in LIMB_CHAINS.values():
        arm = [layout.index(j) for j in arm_names]
        leg = [layout.index(j) for j in leg_names]
        a_off = joints[:, arm] - joints[:, arm[:1]]
        l_off = joints[:, leg] - joints[:, leg[:1]]
        a_len = np.nanmean(np.linalg.norm(np.diff(joints[:, arm], axis=1), axis=2).sum(axis=1))
        l_len = np.nanmean(np.linalg.norm(np.diff(joints[:, leg], axis=1), axis=2).sum(axis=1))
        ratio = float(l_len / a_len) if np.isfinite(a_len) and a_len > 1e-6 and np.isfinite(l_len) else 1.0
        out[:, leg] = joints[:, leg[:1]] + a_off * ratio
        out[:, arm] = joints[:, arm[:1]] + l_off / ratio
    return out


def rescale_bones(joints: np.ndarray, factors: np.ndarray, layout: JointLayout) -> np.ndarray:
    """Every bone (joint minus its parent) times its joint's factor, rebuilt outwards from the centre;
    a joint's mirror uses the same factor (another body, not a lopsided one)."""
    f = np.array(factors, np.float32, copy=True)
    for a, b in layout.mirror_pairs:
        f[b] = f[a]
    order = np.argsort(layout.hop_distance[:, layout.centre], kind="stable")
    out = joints.copy()
    for v in order:
        p = layout.parents[v]
        if p != v:
            out[:, v] = out[:, p] + (joints[:, v] - joints[:, p]) * f[v]
    return out


def temporal_crop(joints: np.ndarray, crop_min: float, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous part covering >= ``crop_min`` of a trimmed clip (resampled afterwards)."""
    n = joints.shape[0]
    if crop_min >= 1.0 or n < 4:
        return joints
    length = round(n * rng.uniform(crop_min, 1.0))
    length = max(2, min(n, length))
    start = int(rng.integers(0, n - length + 1))
    return joints[start : start + length]


def add_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return x
    return (x + rng.normal(0.0, sigma, size=x.shape)).astype(np.float32)


def corrupt(joints: np.ndarray, cfg: CorruptConfig, rng: np.random.Generator,
            layout: JointLayout) -> np.ndarray:
    """Damage raw joints as ``cfg`` says (missing joints, a missing limb, dropped frames, noise)."""
    if cfg.p <= 0:
        return joints
    out = joints
    if cfg.joints > 0 and rng.random() < cfg.p:
        out = damage.drop_joints(out, rng.uniform(0, cfg.joints), rng)
    if cfg.limb and rng.random() < cfg.p:
        out = damage.drop_limb(out, layout, damage.LIMBS[int(rng.integers(len(damage.LIMBS)))])
    if cfg.frames > 0 and rng.random() < cfg.p:
        out = damage.drop_frames(out, rng.uniform(0, cfg.frames), rng)
    if cfg.noise > 0 and rng.random() < cfg.p:
        out = damage.add_noise(out, rng.uniform(0, cfg.noise), rng, layout)
    return out


def augmented_window(timestamps: np.ndarray, joints: np.ndarray, end: float, spec: InputSpec,
                     aug: AugmentConfig, rng: np.random.Generator, layout: JointLayout) -> np.ndarray:
    """One sliding-window training input: speed change and end jitter on the clock, geometry and
    damage on the raw joints, then the shared ``prepare_window`` and joint noise."""
    t = timestamps
    if aug.speed:
        # Play the clip faster/slower around the window's end (what happens at the end stays inside).
        f = rng.uniform(1 - aug.speed, 1 + aug.speed)
        t = end + (t - end) / f
    if aug.shift_s:
        end = end + rng.uniform(-aug.shift_s, aug.shift_s)
    joints = corrupt(geometric(joints, aug, rng, layout), aug.corrupt, rng, layout)
    return add_noise(prepare_window(t, joints, spec, end), aug.noise, rng)
