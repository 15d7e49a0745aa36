"""Joint layouts, the ST-GCN spatial partition, and layout conversion on real skeletons."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.convert import conversion_matrix, from_mediapipe
from skeleton.layouts import COCO_17, KINECT_20, LAYOUTS, MEDIAPIPE_33, JointLayout, get_layout
from skeleton.manifest import InputSpec, NormalizationSpec, WindowSpec
from skeleton.preprocess import sequence_to_layout
from tests.model_helpers import require_cache, utd_file

ALL = list(LAYOUTS.values())


@pytest.mark.parametrize("layout", ALL, ids=lambda lay: lay.name)
def test_partition_properties(layout: JointLayout) -> None:
    parts = layout.spatial_partition()
    v = layout.num_joints
    assert parts.shape == (3, v, v)
    # The three subsets tile A + I, column-normalised (every column sums to 1).
    total = parts.sum(axis=0)
    np.testing.assert_allclose(total.sum(axis=0), np.ones(v), atol=1e-6)
    assert ((total > 0) == (layout.adjacency + np.eye(v) > 0)).all()
    support = parts > 0
    assert (support.sum(axis=0) <= 1).all(), "an edge belongs to exactly one subset"
    # Self loops are in the root subset; centripetal and centrifugal subsets are transposes in support.
    assert (np.diag(parts[0]) > 0).all()
    np.testing.assert_array_equal(support[1], support[2].T)
    hop = layout.hop_distance[:, layout.centre]
    i, j = np.nonzero(parts[1])
    assert (hop[i] < hop[j]).all(), "centripetal: source joint closer to the centre"


@pytest.mark.parametrize("layout", ALL, ids=lambda lay: lay.name)
def test_graph_connected_and_parents(layout: JointLayout) -> None:
    assert np.isfinite(layout.hop_distance).all()
    np.testing.assert_array_equal(layout.hop_distance, layout.hop_distance.T)
    hop = layout.hop_distance[:, layout.centre]
    for joint, parent in enumerate(layout.parents):
        if joint == layout.centre:
            assert parent == joint
        else:
            assert layout.adjacency[joint, parent] == 1 and hop[parent] == hop[joint] - 1
    for a, b in layout.mirror_pairs:
        assert layout.joints[a].replace("left", "right") == layout.joints[b]


def test_get_layout_errors() -> None:
    assert get_layout("kinect20") is KINECT_20
    with pytest.raises(ValueError, match="unknown joint layout"):
        get_layout("nope")


def test_conversion_matrices_are_convex_combinations() -> None:
    for layout in (MEDIAPIPE_33, KINECT_20, COCO_17):
        m = conversion_matrix(layout)
        assert m.shape == (layout.num_joints, 33)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
        assert (m >= 0).all()


def test_utd_canonical_axes_on_real_frames() -> None:
    """UTD-MHAD subjects face the Kinect: their left shoulder appears on the image's right (x)."""
    from training.utd_mhad import read_skeleton

    k = KINECT_20.index
    for action in (1, 16, 22, 27):
        joints = read_skeleton(utd_file(action, 1, 1))
        assert joints.shape[1:] == (20, 3)
        assert (joints[:, k("left_shoulder"), 0] > joints[:, k("right_shoulder"), 0]).all()
        assert (joints[:, k("left_hip"), 0] > joints[:, k("right_hip"), 0]).all()
        assert (joints[:, k("head"), 1] > joints[:, k("hip_center"), 1]).all(), "y points up"
        assert (joints[:, k("hip_center"), 2] > 1.0).all(), "z is the distance from the camera"


@pytest.mark.skeleton_cache
def test_mediapipe_to_kinect_on_real_pose() -> None:
    """A real MediaPipe track (UP-Fall 'jumping', frontal camera) converted to kinect20."""
    from training.skeleton_cache import load_clip

    clip = load_clip(require_cache("Activity10/Trial2Cam1.npz"))
    track = clip.primary_track
    assert track is not None
    spec = InputSpec(layout="kinect20", coordinates="world", window=WindowSpec(length=32, fps=16, stride=4),
                     normalization=NormalizationSpec(centre_joint="spine"))
    joints = sequence_to_layout(track, spec)
    seen = np.isfinite(joints).all(axis=(1, 2))
    assert seen.mean() > 0.9
    j = joints[seen]
    k = KINECT_20.index
    mp = MEDIAPIPE_33.index
    world = track.world[seen] * np.array([1, -1, 1], np.float32)
    np.testing.assert_allclose(j[:, k("hip_center")], world[:, [mp("left_hip"), mp("right_hip")]].mean(1),
                               atol=1e-5)
    np.testing.assert_allclose(j, from_mediapipe(world, KINECT_20), atol=1e-6)
    # Frontal camera: left shoulder on the image's right; y up: head above shoulders above spine.
    assert np.median(j[:, k("left_shoulder"), 0] - j[:, k("right_shoulder"), 0]) > 0.2
    assert (j[:, k("head"), 1] > j[:, k("shoulder_center"), 1]).mean() > 0.95
    assert (j[:, k("shoulder_center"), 1] > j[:, k("spine"), 1]).all()
    assert (j[:, k("spine"), 1] > j[:, k("hip_center"), 1]).all()
    # Body proportions comparable to a real Kinect subject (trunk 0.4-0.7 m, shoulders 0.25-0.5 m).
    trunk = np.linalg.norm(j[:, k("shoulder_center")] - j[:, k("hip_center")], axis=1)
    shoulders = np.linalg.norm(j[:, k("left_shoulder")] - j[:, k("right_shoulder")], axis=1)
    assert 0.4 < np.median(trunk) < 0.7 and 0.25 < np.median(shoulders) < 0.5


def test_a_missing_mediapipe_landmark_blanks_only_the_joints_built_from_it() -> None:
    """Damaged input (a NaN landmark) must not make the whole converted frame NaN."""
    rng = np.random.default_rng(0)
    joints = rng.normal(size=(4, 33, 3)).astype(np.float32)
    clean = from_mediapipe(joints, KINECT_20)
    wrist = MEDIAPIPE_33.index("left_wrist")
    joints[1, wrist] = np.nan
    out = from_mediapipe(joints, KINECT_20)
    uses = conversion_matrix(KINECT_20)[:, wrist] != 0
    assert uses.any() and np.isnan(out[1, uses]).all()
    np.testing.assert_array_equal(out[1, ~uses], clean[1, ~uses])
    np.testing.assert_array_equal(out[[0, 2, 3]], clean[[0, 2, 3]])
