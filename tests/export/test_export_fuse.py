"""The inference rewrites (export/fuse.py) of the graph convolution and the multi-scale temporal
convolution, on real UTD-MHAD windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.fuse import AggregateFirstGCN, SharedEntryMSTCN, fuse_for_inference
from models import PRESETS, build_model
from models.blocks import MSTCN, UnitGCN
from skeleton.preprocess import prepare_clip
from tests.conftest import REPO_ROOT
from tests.model_helpers import utd_file
from tests.skeleton.test_preprocess import UTD_SPEC


@pytest.fixture(scope="module")
def real_batch() -> torch.Tensor:
    from training.utd_mhad import read_skeleton

    clips = [read_skeleton(utd_file(a, s, 2)) for a, s in ((2, 1), (11, 3), (20, 5))]
    return torch.from_numpy(np.stack([prepare_clip(c, UTD_SPEC) for c in clips]))


def _trained_looking(arch: str) -> torch.nn.Module:
    """Random weights *and* non-trivial BatchNorm statistics, biases and adjacency, so that every
    term the rewrite folds (BN scale and shift, conv bias times the adjacency's column sums) matters."""
    torch.manual_seed(1)
    model = build_model(arch, 27, "kinect20")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, UnitGCN):
                m.A.add_(torch.rand_like(m.A) * 0.2)  # the learnt adjacency drifts from the partition
                if m.conv.bias is not None:
                    m.conv.bias.uniform_(-0.5, 0.5)
                if m.importance is not None:
                    m.importance.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("arch", sorted(PRESETS))
def test_each_rewritten_unit_matches(arch: str, real_batch: torch.Tensor) -> None:
    """Unit by unit, on the activations the real windows produce (a deep random network's logits
    hardly depend on its input, so the units are compared, and whole trained models below)."""
    model = _trained_looking(arch)
    inputs: dict[str, torch.Tensor] = {}
    rewrites = {UnitGCN: AggregateFirstGCN, MSTCN: SharedEntryMSTCN}
    units = {name: m for name, m in model.named_modules() if type(m) in rewrites}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: inputs.__setitem__(n, args[0]))
             for n, m in units.items()]
    with torch.no_grad():
        model(real_batch)
        for name, unit in units.items():
            ref, got = unit(inputs[name]), rewrites[type(unit)](unit)(inputs[name])
            assert ref.std() > 0.05  # an activation that varies: a real comparison
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for h in hooks:
        h.remove()
    fused = fuse_for_inference(model)
    for original, rewritten in rewrites.items():
        count = sum(isinstance(m, original) for m in units.values())
        assert not any(isinstance(m, original) for m in fused.modules())
        assert sum(isinstance(m, rewritten) for m in fused.modules()) == count
    assert sum(isinstance(m, AggregateFirstGCN) for m in fused.modules()) > 0
    assert any(isinstance(m, UnitGCN) for m in model.modules())  # the original is left alone
    with torch.no_grad():
        torch.testing.assert_close(fused(real_batch), model(real_batch), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["utd-mhad-stgcnpp-lite", "upfall-stgcnpp-lite"])
def test_shipped_checkpoints_fuse_exactly(name: str, real_batch: torch.Tensor) -> None:
    from training.checkpoint import load_checkpoint

    model = load_checkpoint(REPO_ROOT / "model_zoo" / name / "checkpoint.pt").model.eval()
    with torch.no_grad():
        ref, got = model(real_batch), fuse_for_inference(model)(real_batch)
    assert ref.std(dim=0).max() > 0.1  # different windows, different logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_fusing_a_training_model_is_refused() -> None:
    model = build_model("stgcnpp_lite", 27, "kinect20").train()
    gcn = next(m for m in model.modules() if isinstance(m, UnitGCN))
    tcn = next(m for m in model.modules() if isinstance(m, MSTCN))
    with pytest.raises(ValueError, match="eval-mode"):
        AggregateFirstGCN(gcn)
    with pytest.raises(ValueError, match="eval-mode"):
        SharedEntryMSTCN(tcn)


def test_exported_graph_has_no_einsum_in_the_blocks(tmp_path: Path, real_batch: torch.Tensor) -> None:
    import onnx

    from export.onnx_export import export_onnx, ort_logits

    model = _trained_looking("stgcnpp_lite")
    path = tmp_path / "m.onnx"
    export_onnx(fuse_for_inference(model), real_batch[:2], path)
    ops = [n for n in onnx.load(str(path)).graph.node if n.name.startswith("/blocks")]
    assert ops and not any(n.op_type == "Einsum" for n in ops)
    assert sum(n.op_type == "MatMul" for n in ops) == 6  # one per graph convolution
    assert sum(n.op_type == "Split" for n in ops) == 6  # one shared branch entry per temporal unit
    with torch.no_grad():
        ref = model(real_batch).numpy()
    np.testing.assert_allclose(ort_logits(path, real_batch.numpy()), ref, rtol=1e-4, atol=1e-4)
