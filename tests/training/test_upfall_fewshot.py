"""How the action sets' default "unknown" threshold is chosen (``python -m training.upfall_fewshot
set-threshold``): per direction across trials, the threshold that gets most clips right when a
set lacks two daily activities, measured on the other direction, the mean shipped. Checked on
vectors whose answer is known; the shipped value itself is checked against the recipe in
tests/export/test_embedding_export.py, the behaviour over HTTP in test_action_sets_live.py."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.prototypes import UNKNOWN, PrototypeSet, normalize
from training.upfall_fewshot import DAILY, Vectors, choose_set_threshold, set_clip_labels


def _trial(rng: np.random.Generator, axes: np.ndarray, noise: float) -> Vectors:
    """11 activities, each 60 windows (one every 0.5 s) around its own direction."""
    ends = np.arange(1, 61) * 0.5
    noisy = {a: axes[a - 1] + noise * rng.standard_normal((60, axes.shape[1])) for a in range(1, 12)}
    return {a: (ends, normalize(v)) for a, v in noisy.items()}


def test_the_set_threshold_separates_enrolled_from_held_out_activities() -> None:
    rng = np.random.default_rng(0)
    axes = normalize(rng.standard_normal((11, 256)))
    vecs = {1: _trial(rng, axes, 0.05), 2: _trial(rng, axes, 0.05)}
    found = choose_set_threshold(vecs, logit_scale=27.0, seconds=10.0)
    assert found["held_out_pairs"] == len(DAILY) * (len(DAILY) - 1) // 2 == 15
    # every window of an activity is ~1.0 from its own prototype and ~0 from the others: the best
    # thresholds span that gap, and the middle of them is chosen
    folds = list(found["folds"].values())
    for f in folds:
        assert 0.3 < f["threshold"] < 0.7, f
        assert f["held_out_right"] == 1.0 and f["full_set_top1"] == 1.0 and f["full_set_fall_recall"] == 1.0
        assert f["full_set_unknown"] == 0
    assert found["threshold"] == pytest.approx(np.mean([f["threshold"] for f in folds]))


def test_a_clip_is_unknown_when_most_of_its_windows_are() -> None:
    protos = PrototypeSet.from_examples({"a": np.eye(4)[:1], "b": np.eye(4)[1:2]})
    windows = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)  # 1 of 3 near "a"
    assert set_clip_labels(protos, windows, 27.0, np.array([-1.0, 0.5])) == ["a", UNKNOWN]
    assert set_clip_labels(protos, windows[:1], 27.0, np.array([0.5, 1.01])) == ["a", UNKNOWN]
