"""Damaged skeletons (skeleton.corrupt) on real UTD-MHAD and UP-Fall joints, the per-joint gap filling
of skeleton.preprocess that copes with them, and the corruption augmentation's switch."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton import corrupt
from skeleton.layouts import KINECT_20, MEDIAPIPE_33
from skeleton.manifest import InputSpec, NormalizationSpec, WindowSpec
from skeleton.preprocess import fill_missing, prepare_clip, prepare_window, resample_window
from tests.model_helpers import utd_file

UTD_SPEC = InputSpec(
    layout="kinect20", coordinates="world", window=WindowSpec(length=32, fps=15, stride=4),
    normalization=NormalizationSpec(centre_joint="spine", scale_joints=("shoulder_center", "hip_center"),
                                    align_view=True),
)


def _utd(action: int = 5, subject: int = 2) -> np.ndarray:
    from training.utd_mhad import read_skeleton

    return read_skeleton(utd_file(action, subject, 1))


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3])
def test_drop_joints_drops_that_share_of_every_frame(fraction: float) -> None:
    joints = _utd()
    out = corrupt.drop_joints(joints, fraction, np.random.default_rng(0))
    missing = np.isnan(out).any(axis=2)
    assert (missing.sum(axis=1) == round(fraction * 20)).all()
    assert np.isnan(out[missing]).all()  # a dropped joint loses all three coordinates
    np.testing.assert_array_equal(out[~missing], joints[~missing])
    assert not (missing == missing[0]).all()  # drawn anew per frame
    assert np.isfinite(joints).all()  # the input is untouched


@pytest.mark.parametrize("limb", corrupt.LIMBS)
def test_drop_limb_removes_that_limb_only(limb: str) -> None:
    joints = _utd()
    out = corrupt.drop_limb(joints, KINECT_20, limb)
    idx = corrupt.limb_joints(KINECT_20, limb)
    side, part = limb.split("_")
    names = {KINECT_20.joints[i] for i in idx}
    parts = ("elbow", "wrist", "hand") if part == "arm" else ("knee", "ankle", "foot")
    expected = {f"{side}_{j}" for j in parts}
    assert names == expected
    assert np.isnan(out[:, list(idx)]).all()
    rest = [i for i in range(20) if i not in idx]
    np.testing.assert_array_equal(out[:, rest], joints[:, rest])
    # MediaPipe's 33 landmarks: the fingers / heel and foot index belong to the limb too
    mp = {MEDIAPIPE_33.joints[i] for i in corrupt.limb_joints(MEDIAPIPE_33, limb)}
    assert len(mp) == (5 if part == "arm" else 4) and all(n.startswith(side) for n in mp)


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_drop_frames_keeps_the_time_axis_and_the_ends(fraction: float) -> None:
    joints = _utd()
    out = corrupt.drop_frames(joints, fraction, np.random.default_rng(1))
    dropped = np.isnan(out).all(axis=(1, 2))
    assert out.shape == joints.shape
    assert dropped.sum() == round(fraction * len(joints))
    assert not dropped[0] and not dropped[-1]
    np.testing.assert_array_equal(out[~dropped], joints[~dropped])


def test_add_noise_has_the_stated_size_in_trunk_lengths() -> None:
    joints = _utd()
    trunk = corrupt.body_size(joints, KINECT_20)
    k = KINECT_20.index
    trunks = np.linalg.norm(joints[:, k("shoulder_center")] - joints[:, k("hip_center")], axis=-1)
    assert trunk == pytest.approx(float(np.median(trunks)))
    assert 0.2 < trunk < 0.8  # metres: a real torso
    diff = corrupt.add_noise(joints, 0.1, np.random.default_rng(2), KINECT_20) - joints
    assert abs(diff.mean()) < 0.01 * trunk
    assert diff.std() == pytest.approx(0.1 * trunk, rel=0.05)


def test_corruption_conditions_are_seeded() -> None:
    joints = _utd()
    for cond in corrupt.CONDITIONS:
        a = cond.apply(joints, KINECT_20, np.random.default_rng(3))
        b = cond.apply(joints, KINECT_20, np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)
    assert [c.name for c in corrupt.CONDITIONS][:5] == [
        "clean", "joints 10 %", "joints 20 %", "joints 30 %", "limb (random)"]


def test_damaged_clip_is_filled_joint_by_joint() -> None:
    """A joint missing in some frames is interpolated from its own neighbouring frames; a joint
    missing throughout sits on its parent; the rest of the frame is used, not thrown away."""
    joints = _utd()
    damaged = corrupt.drop_joints(joints, 0.3, np.random.default_rng(4))
    t = np.arange(len(joints)) / 30.0
    window = WindowSpec(length=32, fps=30, stride=4)
    out = resample_window(t, damaged, window, end_time=float(t[40]))  # samples = frames 9..40
    frames = np.arange(9, 41)
    seen = np.isfinite(damaged[frames]).all(axis=2)
    np.testing.assert_allclose(out[seen], joints[frames][seen], atol=1e-5)  # observed: untouched
    v = int(np.argmax((~seen).sum(axis=0)))  # a joint missing in some of these frames
    obs = np.isfinite(damaged[:, v, 0])
    expect = np.interp(t[frames], t[obs], damaged[obs, v, 0])
    np.testing.assert_allclose(out[:, v, 0], expect, atol=1e-5)
    # the old rule (a frame with any missing joint is no frame) would leave nothing here
    assert not np.isfinite(damaged[frames]).all(axis=(1, 2)).any()
    limbless = corrupt.drop_limb(joints, KINECT_20, "right_arm")
    filled = fill_missing(limbless[:32], KINECT_20)
    for j in corrupt.limb_joints(KINECT_20, "right_arm"):
        np.testing.assert_array_equal(filled[:, j], filled[:, KINECT_20.index("right_shoulder")])
    x = prepare_clip(limbless, UTD_SPEC)
    assert np.isfinite(x).all()


def test_damage_changes_the_model_input_gracefully() -> None:
    """Every condition gives a finite input close to the clean one (10 % missing joints moves the
    normalised joints by well under a trunk length on average)."""
    joints = _utd(4, 3)
    clean = prepare_clip(joints, UTD_SPEC)
    for cond in corrupt.CONDITIONS[1:]:
        x = prepare_clip(cond.apply(joints, KINECT_20, np.random.default_rng(5)), UTD_SPEC)
        assert np.isfinite(x).all(), cond.name
    x = prepare_clip(corrupt.drop_joints(joints, 0.1, np.random.default_rng(5)), UTD_SPEC)
    assert np.abs(x - clean).mean() < 0.1


def test_prepare_window_with_dropped_frames_interpolates_in_time() -> None:
    joints = _utd()
    t = np.arange(len(joints)) / 30.0
    spec = UTD_SPEC.model_copy(update={"window": WindowSpec(length=16, fps=15, stride=4)})
    damaged = corrupt.drop_frames(joints, 0.3, np.random.default_rng(6))
    a = prepare_window(t, damaged, spec)
    kept = np.isfinite(damaged).all(axis=(1, 2))
    b = prepare_window(t[kept], damaged[kept], spec, end_time=float(t[-1]))
    np.testing.assert_allclose(a, b, atol=1e-5)  # a NaN frame is a missing sample, as a dropped one


def test_corruption_augmentation_is_off_by_default() -> None:
    from training.augment import corrupt as augment_corrupt
    from training.config import AugmentConfig, CorruptConfig

    joints = _utd()
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    assert augment_corrupt(joints, AugmentConfig().corrupt, rng, KINECT_20) is joints
    assert rng.bit_generator.state == state  # old configs train exactly as before
    cfg = CorruptConfig(p=1.0, joints=0.3, limb=True, frames=0.3, noise=0.1)
    out = augment_corrupt(joints, cfg, rng, KINECT_20)
    assert np.isnan(out).any() and out.shape == joints.shape
