"""The embedding ensemble's two augmentations (issue 17, docs/fewshot.md "Ensemble of recipes") on
real UTD-MHAD skeletons: other body proportions (``rescale_bones``) and arms swapped with legs
(``swap_limbs``, whose windows train as extra actions)."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.layouts import get_layout
from tests.conftest import require_data
from training.augment import LIMB_CHAINS, rescale_bones, swap_limbs

LAYOUT = get_layout("kinect20")


@pytest.fixture(scope="module")
def swipe() -> np.ndarray:
    """Subject 1's first "right arm swipe to the left": the right hand moves, the feet do not."""
    from training.utd_mhad import load_utd_mhad

    clip = next(c for c in load_utd_mhad(require_data(), {1}) if c.action == 1)
    return clip.joints


def _travel(joints: np.ndarray, name: str) -> float:
    return float(np.ptp(joints[:, LAYOUT.index(name)], axis=0).max())


def test_swapped_limbs_turn_an_arm_gesture_into_a_leg_gesture(swipe: np.ndarray) -> None:
    out = swap_limbs(swipe, LAYOUT)
    assert np.isfinite(out).all() and out.shape == swipe.shape
    assert _travel(swipe, "right_hand") > 0.5 and _travel(swipe, "right_foot") < 0.05
    assert _travel(out, "right_foot") > 0.5 and _travel(out, "right_hand") < 0.2  # the motion moved down
    # the roots stay (shoulders, hips, spine, head), the chains hang from them
    for root in ("right_shoulder", "right_hip", "spine", "head"):
        i = LAYOUT.index(root)
        np.testing.assert_array_equal(out[:, i], swipe[:, i])
    # swapping back gives the clip again
    np.testing.assert_allclose(swap_limbs(out, LAYOUT), swipe, atol=1e-4)
    assert set(LIMB_CHAINS) == {"left", "right"}


def test_rescaled_bones_keep_the_pose_and_change_the_body(swipe: np.ndarray) -> None:
    same = rescale_bones(swipe, np.ones(LAYOUT.num_joints), LAYOUT)
    np.testing.assert_allclose(same, swipe, atol=1e-6)
    factors = np.full(LAYOUT.num_joints, 1.0)
    knee, hip = LAYOUT.index("left_knee"), LAYOUT.index("left_hip")
    factors[knee] = 1.2  # the left thigh (knee minus its parent, the hip) ...
    out = rescale_bones(swipe, factors, LAYOUT)
    thigh = np.linalg.norm(swipe[:, knee] - swipe[:, hip], axis=1)
    np.testing.assert_allclose(np.linalg.norm(out[:, knee] - out[:, hip], axis=1), 1.2 * thigh, rtol=1e-5)
    right_knee, right_hip = LAYOUT.index("right_knee"), LAYOUT.index("right_hip")
    right = np.linalg.norm(out[:, right_knee] - out[:, right_hip], axis=1)
    original = np.linalg.norm(swipe[:, right_knee] - swipe[:, right_hip], axis=1)
    np.testing.assert_allclose(right, 1.2 * original, rtol=1e-5)  # ... and its mirror alike
    # everything below the knee moves with it, its own bones unchanged
    ankle = LAYOUT.index("left_ankle")
    np.testing.assert_allclose(np.linalg.norm(out[:, ankle] - out[:, knee], axis=1),
                               np.linalg.norm(swipe[:, ankle] - swipe[:, knee], axis=1), rtol=1e-5)
