"""Model registry and definitions, on real UTD-MHAD windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import PRESETS, available, build_model, count_flops, count_params
from models.blocks import STGCNBlock, UnitGCN
from models.stgcn import InputFeatures, STGCNClassifier
from skeleton.layouts import KINECT_20, get_layout
from skeleton.preprocess import prepare_clip
from tests.model_helpers import utd_file
from tests.skeleton.test_preprocess import UTD_SPEC


@pytest.fixture(scope="module")
def real_batch() -> torch.Tensor:
    from training.utd_mhad import read_skeleton

    clips = [read_skeleton(utd_file(a, s, 1)) for a, s in ((1, 1), (9, 2), (22, 3), (27, 4))]
    return torch.from_numpy(np.stack([prepare_clip(c, UTD_SPEC) for c in clips]))


def test_registry_names() -> None:
    assert available() == ["stgcn", "stgcnpp", "stgcnpp_lite"]
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", 27, "kinect20")


@pytest.mark.parametrize("arch", sorted(PRESETS))
def test_forward_shapes_and_batch_independence(arch: str, real_batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 27, "kinect20").eval()
    with torch.no_grad():
        out = model(real_batch)
        single = model(real_batch[1:2])
    assert out.shape == (4, 27) and torch.isfinite(out).all()
    torch.testing.assert_close(single[0], out[1], rtol=1e-4, atol=1e-5)


def test_cost_ordering_and_flops() -> None:
    shape = (3, 32, 20)
    models = {a: build_model(a, 27, "kinect20") for a in PRESETS}
    stats = {a: (count_params(m), count_flops(m, shape)) for a, m in models.items()}
    assert stats["stgcnpp_lite"][0] < stats["stgcnpp"][0] < stats["stgcn"][0]
    assert stats["stgcnpp_lite"][1] < stats["stgcnpp"][1] < stats["stgcn"][1]
    # ST-GCN's 10 blocks at 64-256 channels: ~1.4 GFLOPs for a 32-frame, 20-joint window.
    assert 1.0e9 < stats["stgcn"][1] < 2.0e9


def test_adjacency_is_the_spatial_partition() -> None:
    def first_gcn(arch: str) -> UnitGCN:
        model = build_model(arch, 5, "kinect20")
        assert isinstance(model, STGCNClassifier)
        block = model.blocks[0]
        assert isinstance(block, STGCNBlock)
        return block.gcn

    gcn = first_gcn("stgcn")
    np.testing.assert_allclose(gcn.A.numpy(), KINECT_20.spatial_partition())
    assert isinstance(gcn.importance, torch.nn.Parameter)  # ST-GCN edge-importance weighting
    pp = first_gcn("stgcnpp")
    assert isinstance(pp.A, torch.nn.Parameter) and pp.importance is None  # ST-GCN++ learnt 'init' graph


def test_input_features_bone_and_motion(real_batch: torch.Tensor) -> None:
    layout = get_layout("kinect20")
    feats = InputFeatures(layout, ("joint", "bone", "motion"))
    out = feats(real_batch)
    assert out.shape == (4, 9, 32, 20)
    torch.testing.assert_close(out[:, :3], real_batch)
    for joint, parent in enumerate(layout.parents):
        bone = real_batch[:, :, :, joint] - real_batch[:, :, :, parent]
        torch.testing.assert_close(out[:, 3:6, :, joint], bone)
    torch.testing.assert_close(out[:, 6:, :-1], real_batch[:, :, 1:] - real_batch[:, :, :-1])
    assert (out[:, 6:, -1] == 0).all()
    with pytest.raises(ValueError):
        InputFeatures(layout, ("velocity",))


def test_other_layouts_build() -> None:
    for layout, v in (("mediapipe33", 33), ("coco17", 17)):
        model = build_model("stgcnpp_lite", 11, layout).eval()
        with torch.no_grad():
            assert model(torch.zeros(2, 3, 16, v)).shape == (2, 11)
