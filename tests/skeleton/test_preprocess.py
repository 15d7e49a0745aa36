"""The shared preprocessing on real skeletons, and the clip decision rule (skeleton.clip)."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.clip import ClipRule, decide, fall_probability, window_ends
from skeleton.layouts import KINECT_20
from skeleton.manifest import ClipRuleSpec, InputSpec, NormalizationSpec, WindowSpec
from skeleton.preprocess import (
    kinect_to_canonical,
    normalize,
    prepare_clip,
    prepare_window,
    sequence_to_layout,
)
from tests.model_helpers import require_cache, utd_file

UTD_SPEC = InputSpec(
    layout="kinect20", coordinates="world", window=WindowSpec(length=32, fps=15, stride=4),
    normalization=NormalizationSpec(centre_joint="spine", scale_joints=("shoulder_center", "hip_center"),
                                    align_view=True),
)


def _utd(action: int = 1) -> np.ndarray:
    from training.utd_mhad import read_skeleton

    return read_skeleton(utd_file(action, 1, 1))


def test_kinect_to_canonical_flips_x_only() -> None:
    import scipy.io

    raw = np.transpose(scipy.io.loadmat(str(utd_file(5, 2, 1)))["d_skel"], (2, 0, 1)).astype(np.float32)
    can = kinect_to_canonical(raw)
    np.testing.assert_array_equal(can[..., 0], -raw[..., 0])
    np.testing.assert_array_equal(can[..., 1:], raw[..., 1:])


def test_prepare_clip_on_real_utd_clip() -> None:
    joints = _utd(4)
    x = prepare_clip(joints, UTD_SPEC)
    assert x.shape == (3, 32, 20) and x.dtype == np.float32 and np.isfinite(x).all()
    k = KINECT_20.index
    frames = np.transpose(x, (1, 2, 0))  # (T, V, 3)
    np.testing.assert_allclose(frames[0, k("spine")], 0.0, atol=1e-6)
    trunk = np.linalg.norm(frames[:, k("shoulder_center")] - frames[:, k("hip_center")], axis=-1)
    assert trunk.mean() == pytest.approx(1.0, rel=1e-5)
    # align_view: the first frame's hip line points from the right hip to the left along +x.
    d = frames[0, k("left_hip")] - frames[0, k("right_hip")]
    assert d[0] > 0 and abs(d[2]) < 1e-5
    # The first and last samples are the clip's first and last frames (uniform resampling); only the
    # body-size scale differs (a mean over the resampled frames vs over all frames).
    full = normalize(joints, UTD_SPEC.normalization, KINECT_20)[[0, -1]]
    factor = np.linalg.norm(frames[[0, -1]]) / np.linalg.norm(full)
    assert factor == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(frames[[0, -1]], full * factor, atol=1e-5)


def test_normalisation_is_invariant_to_camera_yaw_and_distance() -> None:
    """Rotating a real clip about the vertical axis and moving it away does not change the input."""
    from training.augment import rotation_matrix

    joints = _utd(13)
    moved = joints @ rotation_matrix(np.deg2rad(35), 0.0, 0.0).T * 1.3 + np.array([0.3, 0.1, 0.8], np.float32)
    np.testing.assert_allclose(prepare_clip(moved, UTD_SPEC), prepare_clip(joints, UTD_SPEC), atol=1e-4)


@pytest.mark.skeleton_cache
def test_prepare_window_on_real_mediapipe_track_with_gaps() -> None:
    from training.skeleton_cache import load_clip

    clip = load_clip(require_cache("Activity1/Trial1Cam1.npz"))
    track = clip.primary_track
    assert track is not None
    spec = UTD_SPEC.model_copy(update={"coordinates": "image",
                                       "window": WindowSpec(length=32, fps=16, stride=4)})
    joints = sequence_to_layout(track, spec, float(clip.height))
    joints[10:20] = np.nan  # the actor missed for 10 frames
    end = float(track.timestamps[40])
    x = prepare_window(track.timestamps, joints, spec, end)
    assert x.shape == (3, 32, 20) and np.isfinite(x).all()
    # Image y points up after canonicalisation: the head is above the hips in every frame.
    k = KINECT_20.index
    assert (x[1, :, k("head")] > x[1, :, k("hip_center")]).all()


def test_window_ends_follow_the_service_schedule() -> None:
    ends = window_ends(1.0, 5.0, 2.0, 0.25)
    np.testing.assert_allclose(ends, 3.0 + 0.25 * np.arange(9))
    np.testing.assert_allclose(window_ends(1.0, 2.5, 2.0, 0.25), [2.5])  # shorter than a window
    with pytest.raises(ValueError):
        window_ends(0, 1, 1, 0)


def _probs(rows: list[list[float]]) -> np.ndarray:
    p = np.asarray(rows, np.float64)
    return p / p.sum(axis=1, keepdims=True)


def test_decide_without_fall_classes_is_mean_argmax() -> None:
    p = _probs([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    d = decide(p, np.arange(3.0))
    assert d.label == 1 and d.confidence == pytest.approx(p[:, 1].mean()) and not d.fall


def test_decide_fall_wins_over_the_mean() -> None:
    rule = ClipRule(fall_classes=(0, 1), fall_threshold=0.5)
    # Mostly 'laying' (class 3), one window with a fall: the clip is the fall class 1.
    p = _probs([[0.05, 0.05, 0.1, 0.8]] * 8 + [[0.2, 0.6, 0.1, 0.1]] + [[0.05, 0.05, 0.1, 0.8]] * 8)
    t = np.arange(17) * 0.25
    d = decide(p, t, rule)
    assert d.fall and d.label == 1 and d.fall_time == pytest.approx(t[8])
    assert d.fall_probability == pytest.approx(0.8)
    np.testing.assert_allclose(fall_probability(p, rule)[8], 0.8)
    # Two consecutive windows required: the single spike no longer raises a fall.
    d2 = decide(p, t, ClipRule((0, 1), 0.5, min_fall_windows=2))
    assert not d2.fall and d2.label == 3


def test_decide_never_returns_a_fall_label_without_a_fall() -> None:
    rule = ClipRule(fall_classes=(0,), fall_threshold=0.9)
    p = _probs([[0.45, 0.35, 0.2]] * 5)  # fall class has the highest mean, below threshold
    d = decide(p, np.arange(5.0), rule)
    assert not d.fall and d.label == 1


def test_clip_rule_from_manifest_spec() -> None:
    labels = ["fall a", "walk", "fall b"]
    rule = ClipRule.from_labels(labels, ["fall a", "fall b"], 0.7)
    assert rule.fall_classes == (0, 2) and rule.fall_threshold == 0.7
    with pytest.raises(ValueError):
        ClipRule.from_labels(labels, ["jump"])
    assert ClipRuleSpec().fall_group == "fall"
