"""The embedding's ensemble in the few-shot protocol (issue 17): ``models.ensemble.EmbeddingEnsemble``
(cosine = the mean of the members' cosines), the members (3 recipes x 3 seeds) found per split, and
``select-readout`` validating it next to the single embedding with the rule fixed before measuring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import require_data

SMALL = {"model.kwargs": {"features": ["joint", "bone", "motion"], "base_channels": 16, "num_stages": 3,
                          "inflate_stages": [2], "down_stages": [2]}}


def _member(cfg, seed: int):  # type: ignore[no-untyped-def]
    """An (untrained) embedding built the way ``train_embedding`` builds it for ``seed``."""
    from training.metric_learning import build_embedding_model
    from training.train import seed_everything

    seed_everything(seed, 1)
    return build_embedding_model(cfg)


def _save(model, cfg, path: Path) -> None:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "embedding", "state_dict": model.state_dict(), "config": cfg.model_dump(mode="json"),
                "labels": [], "label_groups": {}, "metrics": {}}, path)


@pytest.fixture(scope="module")
def bank():  # type: ignore[no-untyped-def]
    from training import fewshot

    return fewshot.ClipBank.load(require_data(), fewshot.split_config("r0", "embedding"))


def test_ensemble_cosine_is_the_mean_of_the_members_and_seeds_differ(bank) -> None:  # type: ignore[no-untyped-def]
    from models.ensemble import EmbeddingEnsemble
    from training import fewshot
    from training.metric_learning import embedder_encoder

    cfg = fewshot.split_config("r0", "embedding", overrides=SMALL)
    members = [_member(cfg, s) for s in fewshot.ENSEMBLE_SEEDS]
    # the seed changes the initial weights ...
    w = [torch.cat([p.flatten() for p in m.parameters()]) for m in members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])

    windows = np.concatenate(bank.windows[:40:4])
    each = [embedder_encoder(m)(windows) for m in members]
    ens = embedder_encoder(EmbeddingEnsemble(members))(windows)
    assert ens.shape == (len(windows), 3 * each[0].shape[1])
    assert np.allclose(np.linalg.norm(ens, axis=1), 1.0, atol=1e-4)
    assert np.allclose(ens @ ens.T, np.mean([e @ e.T for e in each], axis=0), atol=1e-4)
    with pytest.raises(ValueError, match="at least two"):
        EmbeddingEnsemble(members[:1])


def test_train_command_trains_each_seed_into_its_member_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train --seeds 1 2``: one run per seed, the seed in its config (init and batch order follow
    ``cfg.seed`` in ``train_embedding``), each into the folder ``ensemble_members`` reads."""
    from training import fewshot

    seen: list[tuple[int, str, Path]] = []
    monkeypatch.setattr(fewshot, "train_run", lambda cfg, out, *_: seen.append((cfg.seed, cfg.name, out)))
    argv = ["train", "--kinds", "embedding", "--seeds", "0", "1", "2", "--splits", "r0",
            "--out", str(tmp_path)]
    assert fewshot.main(argv) == 0
    assert seen == [
        (0, "fewshot-r0-embedding", tmp_path / "r0" / "embedding"),
        (1, "fewshot-r0-embedding-s1", tmp_path / "r0" / "embedding-s1"),
        (2, "fewshot-r0-embedding-s2", tmp_path / "r0" / "embedding-s2"),
    ]
    assert [fewshot.member_dir(tmp_path, "r0", s) for s in fewshot.ENSEMBLE_SEEDS] == [o for _, _, o in seen]

    # each recipe's seeds into their own folders, with the recipe's overrides
    configs: list = []  # type: ignore[type-arg]
    monkeypatch.setattr(fewshot, "train_run", lambda cfg, out, *_: configs.append((cfg, out)))
    argv = ["train", "--kinds", "embedding", "--seeds", "0", "1", "--recipes", "bones", "swap",
            "--splits", "r0", "--out", str(tmp_path)]
    assert fewshot.main(argv) == 0
    assert [(c.seed, c.name, o.name) for c, o in configs] == [
        (0, "fewshot-r0-embedding-bones", "embedding-bones"),
        (1, "fewshot-r0-embedding-bones-s1", "embedding-bones-s1"),
        (0, "fewshot-r0-embedding-swap", "embedding-swap"),
        (1, "fewshot-r0-embedding-swap-s1", "embedding-swap-s1"),
    ]
    swaps = [(c.augment.bones, c.embedding.limb_swap) for c, _ in configs]
    assert swaps == [(0.2, False)] * 2 + [(0.0, True)] * 2


def test_select_readout_validates_the_ensemble_of_a_split(bank, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The members are found per split (none until all are trained), select-readout scores their
    ensemble on training subjects beside the single embedding, and the rule picks the ensemble only
    when it raises both the 1- and the 5-shot mean."""
    from training import fewshot

    cfg = fewshot.split_config("r0", "embedding", overrides=SMALL)
    slots = [(r, s) for r in fewshot.RECIPES for s in fewshot.ENSEMBLE_SEEDS]
    for k, (recipe, seed) in enumerate(slots[:-1]):  # untrained networks, each its own initial weights
        _save(_member(cfg, k), cfg, fewshot.member_dir(tmp_path, "r0", seed, recipe) / "checkpoint.pt")
    assert fewshot.ensemble_members(tmp_path, "r0") is None  # the last member missing
    last = fewshot.member_dir(tmp_path, "r0", slots[-1][1], slots[-1][0])
    _save(_member(cfg, len(slots)), cfg, last / "checkpoint.pt")
    members = fewshot.ensemble_members(tmp_path, "r0")
    assert members is not None and [m.parent.name for m in members] == [
        "embedding", "embedding-s1", "embedding-s2", "embedding-bones", "embedding-bones-s1",
        "embedding-bones-s2", "embedding-swap", "embedding-swap-s1", "embedding-swap-s2"]

    # the same checkpoint nine times: the ensemble is the single embedding, score for score
    same = tmp_path / "same"
    for recipe, seed in slots:
        fewshot.member_dir(same, "r0", seed, recipe).mkdir(parents=True)
        (fewshot.member_dir(same, "r0", seed, recipe) / "checkpoint.pt").symlink_to(members[0])
    found = fewshot.select_readout(same, require_data(), 6, ["r0"])["splits"]["r0"]
    assert found["ensemble"] == found["centred"] == found["centred, embedding-s1"] == found[
        "centred, embedding-swap-s2"]
    assert fewshot.select_readout(same, require_data(), 6, ["r0"])["ensemble_choice"]["chosen"] == "centred"

    result = fewshot.select_readout(tmp_path, require_data(), 6, ["r0"])
    assert (tmp_path / "select-readout.json").is_file()
    r0 = result["splits"]["r0"]
    assert r0["ensemble"] != r0["centred"]  # nine different networks, not the first one alone
    assert r0["centred, embedding-s1"] != r0["centred"] != r0["centred, embedding-bones"]
    assert result["ensemble_choice"]["splits"] == ["r0"]
    # run measures the ensemble's "unknown" at this threshold (calibrate trains no ensemble of its own)
    chosen = result["ensemble_choice"]["max_cosine_threshold"]
    found_thr = fewshot.with_ensemble_threshold({"methods": {"embedding": {"threshold": 0.5}}}, tmp_path)
    methods = found_thr["methods"]
    assert methods["embedding-ensemble"]["threshold"] == chosen and methods["embedding"] == {"threshold": 0.5}
    own = {"methods": {"embedding-ensemble": {"threshold": 0.3}}}
    assert fewshot.with_ensemble_threshold(own, tmp_path)["methods"]["embedding-ensemble"]["threshold"] == 0.3
    assert "embedding-ensemble" not in fewshot.with_ensemble_threshold({}, tmp_path / "none")["methods"]
    # a later call for another split keeps this one (splits are added as their members finish)
    (tmp_path / "r3" / "embedding").mkdir(parents=True)
    (tmp_path / "r3" / "embedding" / "checkpoint.pt").symlink_to(members[0])
    later = fewshot.select_readout(tmp_path, require_data(), 6, ["r3"])
    assert later["splits"]["r0"] == r0 and "ensemble" not in later["splits"]["r3"]
    assert later["ensemble_choice"]["splits"] == ["r0"]
    assert later["ensemble_choice"]["max_cosine_threshold"] == chosen  # still what run and the manifest use

    # run: the split's methods gain "embedding-ensemble", the members centred like the embedding
    windows = np.concatenate(bank.windows[:20:4])
    base = fewshot.base_actions("r0")
    enc = fewshot.method_encoders(members[0], members[0], cfg, bank, base, members)
    single = enc["embedding"](windows)
    each = [single] + [fewshot.embedder_encoder(fewshot.centred_embedding(m, bank, base))(windows)
                       for m in members[1:]]
    ens = enc["embedding-ensemble"](windows)
    assert np.allclose(ens @ ens.T, np.mean([e @ e.T for e in each], axis=0), atol=1e-4)
    assert "embedding-ensemble" not in fewshot.method_encoders(members[0], members[0], cfg, bank, base)

    def scores(c1: float, c5: float, e1: float, e5: float) -> dict[str, dict[str, dict[str, float]]]:
        return {"centred": {"1": {"mean": c1}, "5": {"mean": c5}},
                "ensemble": {"1": {"mean": e1}, "5": {"mean": e5}}}

    choose = fewshot.ensemble_choice
    assert choose({"a": scores(0.8, 0.9, 0.82, 0.91)})["chosen"] == "ensemble"  # type: ignore[index]
    assert choose({"a": scores(0.8, 0.9, 0.82, 0.89)})["chosen"] == "centred"  # type: ignore[index]
    # over splits: a mean 1-shot below the single's loses, however much the 5-shot gains
    two = {"a": scores(0.8, 0.9, 0.79, 0.95), "b": scores(0.8, 0.9, 0.80, 0.9)}
    assert choose(two)["chosen"] == "centred"  # type: ignore[index]
    assert choose({"a": {"centred": {}}}) is None
