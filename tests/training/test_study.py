"""``training.study report`` on real cached UP-Fall clips with the shipped checkpoint as two "seeds"
of one recipe: the clips are decided as ``POST /recognize`` decides them (a fall clip is a fall with
its fall class, a bending clip its daily label), the probabilities are cached per run, and the
seed statistics and ensembles are computed over the runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skeleton.paths import REPO_ROOT
from tests.model_helpers import require_cache
from training.study import group_runs, report

pytestmark = pytest.mark.skeleton_cache

CLIPS = ("Activity1/Trial2Cam1", "Activity9/Trial2Cam1")  # falling forward (hands); picking up


def test_report_decides_clips_as_the_service(tmp_path: Path) -> None:
    checkpoint = REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite" / "checkpoint.pt"
    if not checkpoint.is_file():
        pytest.skip("no shipped UP-Fall checkpoint")
    cache = tmp_path / "cache"
    for name in CLIPS:
        dst = cache / f"{name}.npz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(require_cache(f"{name}.npz"))
    runs = tmp_path / "runs"
    for seed in (0, 1):
        run = runs / f"shipped-s{seed}"
        run.mkdir(parents=True)
        shutil.copy(checkpoint, run / "checkpoint.pt")
        # the fold config: test trial 2 (in-sample for the shipped model: this checks the machinery)
        shutil.copy(REPO_ROOT / "configs" / "upfall-stgcnpp-lite-t1.yaml", run / "config.yaml")
        (run / "metrics.json").write_text(json.dumps({"window_top1": 0.99}))
    assert list(group_runs([runs])) == ["shipped"]
    out = report([runs], ensemble=2, cache_dir=cache, log=lambda _: None)
    entry = out["shipped"]
    assert entry["test_trials"] == [2] and entry["seeds"] == [0, 1]
    for seed in (0, 1):
        assert entry["per_seed"][seed]["served"] == 1.0, entry["per_seed"][seed]["wrong"]
        assert (runs / f"shipped-s{seed}" / "track_probs.npz").is_file()
    assert entry["served"] == {"n": 2, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}
    assert entry["window_top1"]["mean"] == 0.99
    assert entry["ensemble2"]["combinations"] == {"0+1": 1.0}
    again = report([runs], ensemble=0, cache_dir=cache, log=lambda _: None)  # from the cached probs
    assert again["shipped"]["per_seed"][0]["served"] == 1.0
