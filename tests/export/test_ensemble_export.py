"""Seed ensembles exported as one ONNX graph: members' mean probability, manifest, service loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skeleton.manifest import load_manifest
from tests.conftest import REPO_ROOT, require_data
from training.config import load_config

TINY = {"base_channels": 16, "num_stages": 3, "inflate_stages": [], "down_stages": [2],
        "features": ["joint", "bone", "motion"]}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small models (seeds 0, 1) trained one epoch on real UTD-MHAD clips, ensembled by
    ``python -m training.ensemble`` and exported by ``python -m export onnx``."""
    from export.__main__ import main as export_main
    from training.ensemble import main as ensemble_main
    from training.train import train

    data = require_data()
    root = tmp_path_factory.mktemp("ens")
    for seed in (0, 1):
        cfg = load_config(REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite.yaml", {
            "name": "tiny-utd", "model.kwargs": TINY, "dataset.test_subjects": [2], "optim.epochs": 1,
            "optim.warmup_epochs": 0, "threads": 1, "seed": seed, "open_set": None,
        })
        train(cfg, root / f"run-s{seed}", data, log=lambda _: None, max_train=64, plots=False)
    runs = [str(root / f"run-s{s}") for s in (0, 1)]
    assert ensemble_main([*runs, "--out", str(root / "ens"), "--data-dir", str(data)]) == 0
    assert export_main(["onnx", "--checkpoint", str(root / "ens" / "checkpoint.pt"), "--out",
                        str(root / "zoo" / "tiny-ens"), "--data-dir", str(data), "--fp16"]) == 0
    return root


def test_the_graph_serves_the_members_mean_probability(ensemble: Path) -> None:
    """ONNX Runtime's softmax of the ensemble's output == the mean of each member's own PyTorch
    softmax (computed apart from the ensemble module), through the service's classifier."""
    import torch

    from service.classifier import OnnxClassifier
    from training.checkpoint import load_checkpoint
    from training.datasets import real_windows

    model_dir = ensemble / "zoo" / "tiny-ens"
    m = load_manifest(model_dir)
    members = [load_checkpoint(ensemble / f"run-s{s}" / "checkpoint.pt") for s in (0, 1)]
    windows = real_windows(members[0].config, require_data(), REPO_ROOT, 24)
    with torch.no_grad():
        probs = [torch.softmax(ck.model(torch.from_numpy(windows)), dim=1).numpy() for ck in members]
    mean = np.mean(probs, axis=0)
    served = OnnxClassifier(model_dir, m, ["cpu"]).predict(windows[:7])  # odd batch: dynamic axis
    np.testing.assert_allclose(served, mean[:7], atol=1e-5)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # the members differ, so the mean is not either one
    assert m.metrics["onnx_parity"]["rel_error"] <= 1e-4 and m.onnx.fp16_file == "model_fp16.onnx"


def test_manifest_names_the_members_and_the_summed_cost(ensemble: Path) -> None:
    from skeleton.manifest import sha256_file

    m = load_manifest(ensemble / "zoo" / "tiny-ens")
    assert m.ensemble is not None and m.ensemble.combine == "mean_probability"
    assert [(x.run, x.seed) for x in m.ensemble.members] == [("run-s0", 0), ("run-s1", 1)]
    assert m.ensemble.members[1].sha256 == sha256_file(ensemble / "run-s1" / "checkpoint.pt")
    single = load_manifest_metrics(ensemble / "run-s0")
    assert m.metrics["flops"] == 2 * single["flops"] and m.metrics["params"] == 2 * single["params"]
    assert "top1" in m.metrics and len(m.metrics["member_metrics"]) == 2  # measured on subject 2
    for png in ("curves.png", "confusion.png"):  # the members' curves; the ensemble's own confusion
        assert (ensemble / "zoo" / "tiny-ens" / png).is_file()
    assert type(m).model_validate_json(m.model_dump_json()) == m


def test_runs_of_different_recipes_are_refused(ensemble: Path, tmp_path: Path) -> None:
    import torch

    from training.ensemble import main as ensemble_main

    other = tmp_path / "other"
    other.mkdir()
    raw = torch.load(ensemble / "run-s1" / "checkpoint.pt", map_location="cpu", weights_only=False)
    raw["labels"] = list(reversed(raw["labels"]))
    torch.save(raw, other / "checkpoint.pt")
    args = [str(ensemble / "run-s0"), str(other), "--out", str(tmp_path / "e"), "--no-eval"]
    assert ensemble_main(args) == 2
    assert not (tmp_path / "e" / "checkpoint.pt").exists()


def load_manifest_metrics(run: Path) -> dict:
    import json

    return json.loads((run / "metrics.json").read_text())


def test_an_open_set_score_of_raw_logits_is_refused(ensemble: Path, tmp_path: Path) -> None:
    """max_logit / energy read the raw logits, which an ensemble replaces by log probabilities."""
    import torch

    from export.onnx_export import ExportError, export_checkpoint

    raw = torch.load(ensemble / "ens" / "checkpoint.pt", map_location="cpu", weights_only=False)
    raw["config"]["open_set"] = {"score": "max_logit", "threshold": 5.0}
    torch.save(raw, tmp_path / "checkpoint.pt")
    with pytest.raises(ExportError, match="max_softmax"):
        export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "out", require_data(), REPO_ROOT)
