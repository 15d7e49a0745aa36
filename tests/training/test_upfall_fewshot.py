"""How the action sets' default "unknown" threshold is chosen (``python -m training.upfall_fewshot
set-threshold``): per direction across trials, the threshold that gets most clips right when a
set lacks two daily activities, measured on the other direction, the mean shipped. Checked on
vectors whose answer is known; the shipped value itself is checked against the recipe in
tests/export/test_embedding_export.py, the behaviour over HTTP in test_action_sets_live.py."""

from __future__ import annotations

import numpy as np
import pytest

from skeleton.prototypes import UNKNOWN, PrototypeSet, normalize
from training.upfall_fewshot import DAILY, Vectors, choose_set_threshold, clip_labels


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

    def set_clip_labels(w: np.ndarray, thresholds: np.ndarray) -> list[str]:  # scored by the best cosine
        sims = protos.similarities(w)
        return clip_labels([*protos.labels, UNKNOWN], sims, protos.relative_scores(sims), 27.0, thresholds)

    assert set_clip_labels(windows, np.array([-1.0, 0.5])) == ["a", UNKNOWN]
    assert set_clip_labels(windows[:1], np.array([0.5, 1.01])) == ["a", UNKNOWN]


def _examples(rng: np.random.Generator, axes: np.ndarray, noise: float, n: int = 12) -> list[np.ndarray]:
    return [normalize(a + noise * rng.standard_normal((n, axes.shape[1]))) for a in axes]


def test_the_compared_scores_read_a_set_as_documented() -> None:
    """training.open_set_scores (``compare-scores``): the shipped candidate is the service's score;
    the variants reduce to it or to the plain cosine where they should; an ensemble of identical
    members scores like one member, and members that disagree trip the vote."""
    from training.open_set_scores import candidates, members_min, nearest_window, relative, spread_variant

    rng = np.random.default_rng(1)
    axes = normalize(rng.standard_normal((3, 64)))
    examples = _examples(rng, axes, 0.4)
    queries = normalize(axes[[0, 1, 2, 0]] + 0.5 * rng.standard_normal((4, 64)))
    sims, shipped = relative(examples)(queries)
    protos = PrototypeSet.from_examples(
        {str(i): w for i, w in enumerate(examples)},
        {str(i): [float(np.percentile(normalize(w) @ normalize(w.mean(0)), 10))]
         for i, w in enumerate(examples)},
    )
    assert np.allclose(shipped, protos.relative_scores(protos.similarities(queries)), atol=1e-5)
    assert np.allclose(spread_variant(examples)(queries)[1], shipped, atol=1e-5)
    assert np.allclose(spread_variant(examples, power=0.0)(queries)[1], sims.max(axis=1), atol=1e-6)
    assert np.allclose(spread_variant(examples, floor=2.0)(queries)[1], sims.max(axis=1) / 2.0, atol=1e-6)
    assert (shipped > sims.max(axis=1)).all()  # spreads below 1 raise the cosine
    # a query that is one of the example windows is at cosine 1 from its nearest window
    assert nearest_window(examples)(examples[1][:1])[1][0] == pytest.approx(1.0, abs=1e-5)

    # three identical members side by side (each a unit vector / sqrt(3)): like one member
    triple = [np.concatenate([w, w, w], axis=1) / np.sqrt(3) for w in examples]
    q3 = np.concatenate([queries] * 3, axis=1) / np.sqrt(3)
    assert np.allclose(members_min(triple, members=3)(q3)[1], shipped, atol=1e-4)
    assert np.allclose(members_min(triple, members=3, vote=True)(q3)[1], shipped, atol=1e-4)
    # each member sees a query as another label: at most one agrees, the vote makes every query unknown
    mixed = [np.concatenate([examples[i], examples[(i + 1) % 3], examples[(i + 2) % 3]], axis=1) / np.sqrt(3)
             for i in range(3)]
    assert np.isneginf(members_min(mixed, members=3, vote=True)(q3)[1]).all()
    assert set(candidates(9)) > set(candidates(1)) and next(iter(candidates(1).values())) is relative


def test_every_compared_score_runs_the_threshold_protocol() -> None:
    from training.open_set_scores import candidates

    rng = np.random.default_rng(0)
    axes = normalize(rng.standard_normal((11, 90)))
    vecs = {1: _trial(rng, axes, 0.05), 2: _trial(rng, axes, 0.05)}
    for name, score in candidates(9).items():
        found = choose_set_threshold(vecs, logit_scale=27.0, seconds=10.0, score=score)
        assert all(f["held_out_right"] == 1.0 for f in found["folds"].values()), name
