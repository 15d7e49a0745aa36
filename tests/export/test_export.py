"""ONNX export parity on real windows, manifest round trip, the shipped model zoo, TensorRT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skeleton.clip import ClipRule
from skeleton.manifest import load_manifest
from tests.conftest import REPO_ROOT, require_data
from tests.model_helpers import TEST_TRIAL2_ACTIVITIES, UPFALL_CACHE, require_cache
from training.config import load_config

ZOO = REPO_ROOT / "model_zoo"
SHIPPED = sorted(p.parent for p in ZOO.glob("*/manifest.json"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for one epoch on real UTD-MHAD clips, exported with the CLI code path."""
    from export.onnx_export import export_checkpoint
    from training.train import train

    data = require_data()
    root = tmp_path_factory.mktemp("export")
    cfg = load_config(REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite.yaml", {
        "name": "tiny-utd", "model.kwargs": {"base_channels": 16, "num_stages": 3, "inflate_stages": [],
                                             "down_stages": [2], "features": ["joint", "bone", "motion"]},
        "dataset.test_subjects": [2], "optim.epochs": 1, "optim.warmup_epochs": 0, "threads": 1,
    })
    train(cfg, root / "run", data, log=lambda _: None, max_train=64)
    export_checkpoint(root / "run" / "checkpoint.pt", root / "zoo" / "tiny-utd", data, REPO_ROOT, fp16=True,
                      parity_windows=24)
    return root / "zoo" / "tiny-utd"


def test_export_parity_and_manifest(exported: Path) -> None:
    import onnx

    m = load_manifest(exported)  # verifies the sha256
    assert m.name == "tiny-utd" and m.architecture == "stgcnpp_lite" and len(m.labels) == 27
    assert m.onnx.input_name == "skeleton" and m.onnx.output_name == "logits" and m.onnx.opset >= 17
    assert m.onnx.input_shape == ["batch", 3, 32, 20] and m.onnx.output_shape == ["batch", 27]
    parity = m.metrics["onnx_parity"]
    assert parity["windows"] == 24 and parity["rel_error"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert m.onnx.fp16_file == "model_fp16.onnx" and m.onnx.fp16_max_abs_error is not None
    proto = onnx.load(str(exported / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for name in ("metrics.json", "curves.png", "confusion.png", "checkpoint.pt"):
        assert (exported / name).is_file()
    # Round trip: the manifest re-validates from its JSON unchanged.
    again = type(m).model_validate_json(m.model_dump_json())
    assert again == m


def test_onnx_matches_torch_on_real_windows(exported: Path) -> None:
    import torch

    from export.onnx_export import compare, ort_logits
    from training.checkpoint import load_checkpoint
    from training.datasets import real_windows

    ck = load_checkpoint(exported.parent.parent / "run" / "checkpoint.pt")
    windows = real_windows(ck.config, require_data(), REPO_ROOT, 40)
    with torch.no_grad():
        ref = ck.model(torch.from_numpy(windows)).numpy()
    got = ort_logits(exported / "model.onnx", windows, batch_size=7)  # odd batches: dynamic axis
    assert compare(ref, got).rel_error <= 1e-4


def test_reevaluation_keeps_metrics_and_persists_the_clip_rule(exported: Path, tmp_path: Path) -> None:
    """``python -m training.evaluate`` on a finished run: same test accuracy (same weights, same
    data), and a new clip rule lands in the checkpoint that export reads."""
    from training.checkpoint import load_checkpoint
    from training.evaluate import main as evaluate_main

    run = tmp_path / "run"
    shutil.copytree(exported.parent.parent / "run", run)
    before = json.loads((run / "metrics.json").read_text())
    data = str(require_data())
    assert evaluate_main(["--run", str(run), "--data-dir", data, "--min-fall-windows", "3"]) == 0
    after = json.loads((run / "metrics.json").read_text())
    assert after["top1"] == before["top1"] and after["history"] == before["history"]
    assert load_checkpoint(run / "checkpoint.pt").config.clip_rule.min_fall_windows == 3


def test_sha_mismatch_is_refused(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(exported, copy)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_manifest(copy)
    load_manifest(copy, verify_sha=False)


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda p: p.name)
@pytest.mark.skeleton_cache
def test_shipped_model_reproduces_its_metrics(model_dir: Path) -> None:
    """Each model_zoo model, run by ONNX Runtime on inputs the shared code prepares from the real
    data, reproduces the test accuracy recorded in its manifest; on those same real windows the
    shipped PyTorch weights (the benchmark's eager baseline) give the ONNX file's logits."""
    import onnxruntime as ort
    import torch

    from export.onnx_export import compare
    from training.checkpoint import load_checkpoint

    m = load_manifest(model_dir)
    assert (model_dir / "model.onnx").stat().st_size < 10 * 2**20
    assert all((model_dir / f).is_file() for f in ("metrics.json", "curves.png"))
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    ck = load_checkpoint(model_dir / "checkpoint.pt")
    assert ck.config.clip_rule.fall_threshold == m.clip_rule.fall_threshold  # the config's rule

    def onnx_logits(x: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run(None, {"skeleton": x[i : i + 64]})[0] for i in range(0, len(x), 64)])

    def same_as_torch(x: np.ndarray, logits: np.ndarray) -> None:
        """On 128 of the windows, spread over all of them (PyTorch is the slow side)."""
        pick = np.linspace(0, len(x) - 1, min(len(x), 128)).round().astype(int)
        with torch.no_grad():
            ref = ck.model(torch.from_numpy(x[pick])).numpy()
        parity = compare(ref, logits[pick])
        assert parity.rel_error <= 1e-4 and parity.top1_agreement == 1.0, parity

    if m.name.startswith("utd-mhad"):
        from skeleton.preprocess import prepare_clip
        from training.utd_mhad import load_utd_mhad

        clips = load_utd_mhad(require_data(), {2, 4, 6, 8})
        x = np.stack([prepare_clip(c.joints, m.input) for c in clips])
        logits = onnx_logits(x)
        same_as_torch(x, logits)
        top1 = float((logits.argmax(1) == np.array([c.label for c in clips])).mean())
        assert top1 == pytest.approx(m.metrics["top1"], abs=0.003)
    else:
        rule = ClipRule.from_manifest(m)
        assert rule.fall_classes == (0, 1, 2, 3, 4)
        folds = m.metrics.get("cross_validation", [])
        assert {f["run"] for f in folds} >= {m.name + "-t1", m.name + "-t2"}
        # End to end on the real frontal-camera clips of trial 2 in the cache (seen in training: a
        # sanity check of the served path, not an accuracy claim): the rule flags exactly the falls.
        from skeleton.clip import decide
        from skeleton.preprocess import prepare_window
        from training.upfall import clip_window_ends, load_upfall

        for activity in TEST_TRIAL2_ACTIVITIES:
            require_cache(f"Activity{activity}", "Trial2Cam1.npz")
        cfg = load_config(REPO_ROOT / "configs" / f"{m.name}.yaml")
        assert cfg.input == m.input
        windows: list[tuple[np.ndarray, np.ndarray]] = []
        for clip in load_upfall(UPFALL_CACHE, cfg.model_copy(update={"dataset": cfg.dataset.model_copy(
                update={"cameras": [1]})}), [2]):
            ends = clip_window_ends(clip, cfg)
            x = np.stack([prepare_window(clip.timestamps, clip.joints, m.input, float(e)) for e in ends])
            logits = onnx_logits(x)
            p = np.exp(logits - logits.max(1, keepdims=True))
            d = decide(p / p.sum(1, keepdims=True), ends, rule)
            assert d.fall == clip.is_fall, clip.name
            windows.append((x, logits))
        same_as_torch(np.concatenate([x for x, _ in windows]), np.concatenate([lg for _, lg in windows]))


def test_tensorrt_without_gpu_fails_clearly(tmp_path: Path) -> None:
    from tests.conftest import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "-m", "export", "tensorrt", "--models-dir", str(ZOO)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode != 0
    assert "GPU" in proc.stderr and "TensorRT" in proc.stderr


@pytest.mark.gpu
def test_tensorrt_engines_build(tmp_path: Path) -> None:
    """The export builds each engine where the service then loads it, without building again."""
    from export.tensorrt import EngineSettings, build_all, engine_plan
    from service.classifier import OnnxClassifier
    from service.engine_cache import complete_files

    zoo = tmp_path / "zoo"
    shutil.copytree(ZOO, zoo, ignore=shutil.ignore_patterns("trt_cache"))
    settings = EngineSettings(fp16=True, max_batch=64, cache_dir=None)
    reports = build_all(zoo, settings, workspace_gb=1.0)
    assert len(reports) == len(SHIPPED)
    plan = {e["model"]: e for e in engine_plan(zoo, settings)}
    for r in reports:
        assert r.engine_files and r.max_abs_error_vs_cpu < 5e-2
        assert plan[r.model]["engine_dir"] == r.engine_dir
        assert set(r.engine_files) <= set(plan[r.model]["complete"])
        recorded = complete_files(Path(r.engine_dir))
        served = OnnxClassifier(zoo / r.model, load_manifest(zoo / r.model), ["tensorrt", "cuda", "cpu"])
        assert served.provider == "tensorrt" and str(served.engine_dir) == r.engine_dir
        assert complete_files(Path(r.engine_dir)) == recorded  # loaded, not rebuilt
    json.dumps([r.__dict__ for r in reports])
