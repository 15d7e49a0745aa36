"""The few-shot protocol (issue 17) on the real data: its episodes, and a small embedding trained by
``training.metric_learning`` that must beat an untrained network on unseen actions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_data

TINY = {  # a small backbone: a real training run of a few minutes at most on a 2-core CI machine
    "model.kwargs": {"features": ["joint", "bone", "motion"], "base_channels": 16, "num_stages": 3,
                     "inflate_stages": [2], "down_stages": [2]},
    "optim.epochs": 12, "optim.warmup_epochs": 1,
}


@pytest.fixture(scope="module")
def bank():  # type: ignore[no-untyped-def]
    from training import fewshot

    return fewshot.ClipBank.load(require_data(), fewshot.split_config("r0", "embedding"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedding trained like the protocol's split r0 (20 base actions, subjects 1,3,5,7)."""
    from training import fewshot
    from training.train import train

    out = tmp_path_factory.mktemp("tiny-r0")
    train(fewshot.split_config("r0", "embedding", overrides=TINY), out, require_data(), log=lambda _: None,
          plots=False)
    return out / "checkpoint.pt"


def test_protocol_episodes(bank) -> None:  # type: ignore[no-untyped-def]
    """Examples come from training subjects only and queries are every test-subject clip of the unseen
    actions; the same seed gives the same draws (every method sees the same examples)."""
    from training import fewshot

    split = fewshot.splits()
    assert split["21-27"] == list(range(21, 28)) and len(split) >= 6
    assert all(len(split[f"r{s}"]) == 7 for s in fewshot.RANDOM_SPLIT_SEEDS)
    unseen = fewshot.unseen_actions("r0")
    assert not set(unseen) & set(fewshot.base_actions("r0")) and len(fewshot.base_actions("r0")) == 20
    eps = fewshot.draw_episodes(bank, unseen, 5, 4, 0, fewshot.TRAIN_SUBJECTS, fewshot.TEST_SUBJECTS)
    again = fewshot.draw_episodes(bank, unseen, 5, 4, 0, fewshot.TRAIN_SUBJECTS, fewshot.TEST_SUBJECTS)
    for ep, ep2 in zip(eps, again, strict=True):
        assert sorted(ep.support) == unseen
        support = np.concatenate(list(ep.support.values()))
        assert set(bank.subjects[support]) <= {1, 3, 5, 7} and all(len(v) == 5 for v in ep.support.values())
        assert all(set(bank.actions[v]) == {a} for a, v in ep.support.items())
        assert set(bank.subjects[ep.queries]) == {2, 4, 6, 8} and set(bank.actions[ep.queries]) == set(unseen)
        assert len(ep.queries) == int((np.isin(bank.actions, unseen) & (bank.subjects % 2 == 0)).sum())
        assert all(np.array_equal(ep.support[a], ep2.support[a]) for a in ep.support)
    # a clip is the service's windows of it played at 30 fps (32 frames at 15 fps, every 4 frames)
    lengths = np.array([len(w) for w in bank.windows])
    assert lengths.min() >= 1 and lengths.max() > 3 and bank.windows[0].shape[1:] == (3, 32, 20)


def test_trained_embedding_beats_untrained_network(tiny_run: Path, bank) -> None:  # type: ignore[no-untyped-def]
    """Metric learning on 20 actions transfers to 7 unseen arm gestures: the small embedding beats an
    untrained network of the same architecture and readout by a clear margin (measured 78.4 / 85.0 %
    against 55.9 / 65.9 % for 1 / 5 shots, 20 draws)."""
    from training import fewshot
    from training.metric_learning import joints_encoder

    unseen = fewshot.unseen_actions("r0")
    keep = np.isin(bank.actions, unseen)
    cfg = fewshot.split_config("r0", "embedding", overrides=TINY)
    trained = bank.vectors(fewshot.run_encoder(tiny_run), keep)
    untrained = bank.vectors(joints_encoder(fewshot.backbone_of(None, cfg)), keep)
    assert np.allclose(np.linalg.norm(trained[keep], axis=1), 1.0, atol=1e-4)
    for shots, margin in ((1, 0.1), (5, 0.1)):
        eps = fewshot.draw_episodes(bank, unseen, shots, 20, shots, fewshot.TRAIN_SUBJECTS,
                                    fewshot.TEST_SUBJECTS)
        ours, base = fewshot.closed_set(trained, bank, eps), fewshot.closed_set(untrained, bank, eps)
        assert ours["mean"] > base["mean"] + margin, (shots, ours, base)
        assert ours["mean"] > 0.6  # chance is 1/7
