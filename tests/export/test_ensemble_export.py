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


def test_an_embedding_ensemble_serves_the_mean_cosine(tmp_path: Path) -> None:
    """Embeddings of different recipes (two seeds, one with limbs swapped) ensembled by ``python -m
    training.ensemble`` with its own calibrated scale (``--set``) and exported: ONNX Runtime's
    vectors are unit length and their cosines the mean of the members' own cosines."""
    import torch

    from export.__main__ import main as export_main
    from training.checkpoint import load_checkpoint
    from training.datasets import real_windows
    from training.ensemble import main as ensemble_main
    from training.metric_learning import build_embedding_model, embedder_encoder
    from training.train import seed_everything

    data = require_data()
    runs = []
    for seed, over in ((0, {}), (1, {"embedding.limb_swap": True})):
        cfg = load_config(REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite-embedding.yaml",
                          {"name": "tiny-emb", "model.kwargs": TINY, "seed": seed, **over})
        seed_everything(seed, 1)
        model = build_embedding_model(cfg)
        run = tmp_path / f"emb-{seed}"
        run.mkdir()
        torch.save({"state_dict": model.state_dict(), "config": cfg.model_dump(mode="json"),
                    "labels": ["a", "b"], "label_groups": {}, "metrics": {}}, run / "checkpoint.pt")
        runs.append(run)
    assert ensemble_main([*map(str, runs), "--out", str(tmp_path / "ens"), "--no-eval",
                          "--set", "embedding.logit_scale=20.5"]) == 0
    out = tmp_path / "zoo" / "tiny-emb-ens"
    assert export_main(["onnx", "--checkpoint", str(tmp_path / "ens" / "checkpoint.pt"), "--out", str(out),
                        "--data-dir", str(data)]) == 0
    m = load_manifest(out)
    assert m.kind == "embedding" and m.ensemble is not None and m.ensemble.combine == "mean_cosine"
    assert m.embedding is not None and m.embedding.logit_scale == 20.5
    members = [load_checkpoint(r / "checkpoint.pt").model for r in runs]
    assert m.embedding.dim == sum(x.dim for x in members)  # type: ignore[attr-defined]

    import onnxruntime as ort

    windows = real_windows(load_checkpoint(runs[0] / "checkpoint.pt").config, data, REPO_ROOT, 12)
    served = ort.InferenceSession(str(out / "model.onnx")).run(None, {m.onnx.input_name: windows})[0]
    each = [embedder_encoder(x)(windows) for x in members]  # type: ignore[arg-type]
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(served @ served.T, np.mean([e @ e.T for e in each], axis=0), atol=1e-4)
    assert np.abs(each[0] - each[1]).max() > 1e-2  # two different networks, so the mean is not either one
