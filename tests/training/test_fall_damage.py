"""Fall events on damaged skeletons (``training.fall_damage``): real cached UP-Fall clips, the
shipped checkpoint and fall rule, the damage applied to the MediaPipe landmarks both the classifier
and the posture rule read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skeleton.corrupt import Corruption, limb_joints
from skeleton.paths import REPO_ROOT
from tests.model_helpers import require_cache
from training.fall_damage import MEDIAPIPE, damage_sequence, main, run_damage
from training.skeleton_cache import load_clip

pytestmark = pytest.mark.skeleton_cache

CLIPS = ("Activity1/Trial2Cam1", "Activity9/Trial2Cam1")  # falling forward (hands); picking up
CHECKPOINT = REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite" / "checkpoint.pt"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    for name in CLIPS:
        dst = root / f"{name}.npz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(require_cache(f"{name}.npz"))
    return root


def test_damage_reaches_image_world_and_visibility(cache: Path) -> None:
    seq = load_clip(cache / f"{CLIPS[0]}.npz").primary_track
    assert seq is not None
    seen = np.isfinite(seq.image).all(axis=(1, 2))
    arm = list(limb_joints(MEDIAPIPE, "left_arm"))
    out = damage_sequence(seq, Corruption("limb", limb="left_arm"), np.random.default_rng(0))
    assert np.isnan(out.image[:, arm]).all() and np.isnan(out.world[:, arm]).all()
    assert (out.visibility[:, arm] == 0).all()
    rest = [j for j in range(33) if j not in arm]
    np.testing.assert_array_equal(out.image[seen][:, rest], seq.image[seen][:, rest])
    dropped = damage_sequence(seq, Corruption("frames", 0.3), np.random.default_rng(0))
    gone = seen & ~np.isfinite(dropped.image).all(axis=(1, 2))
    assert gone.sum() >= 0.2 * seen.sum() and np.isnan(dropped.world[gone]).all()


def test_fall_events_per_condition(cache: Path, tmp_path: Path) -> None:
    """Clean: the fall clip's fall confirmed, none on picking up. Missing joints in every frame
    keep the other joints (the fall is still found: a missing landmark no longer blanks the frame).
    With every joint gone nobody is left to fall: the damage reaches the rule."""
    if not CHECKPOINT.is_file():
        pytest.skip("no shipped UP-Fall checkpoint")
    conds = (Corruption("clean"), Corruption("joints", 0.1), Corruption("joints", 1.0))
    res = run_damage(CHECKPOINT, cache, conditions=conds)
    assert res["clean"]["falls"] == "1/1" and res["clean"]["false_falls"] == "0/1"
    assert res["joints 10 %"]["falls"] == "1/1"
    assert res["joints 100 %"]["falls"] == "0/1" and res["joints 100 %"]["missed"] == [CLIPS[0]]
    # the CLI: every condition, a JSON per run
    out = tmp_path / "damage.json"
    assert main(["--run", f"shipped={CHECKPOINT}", "--cache", str(cache), "--json", str(out)]) == 0
    assert out.is_file() and "limb (random)" in out.read_text()
