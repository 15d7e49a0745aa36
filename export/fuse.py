"""Inference-only rewrite of a trained model before ONNX export: same outputs, faster graph.

The graph convolution (``models.blocks.UnitGCN``) is trained as PYSKL writes it: a 1x1 conv to
K*C channels, an einsum with the K adjacency matrices, BatchNorm. ONNX Runtime runs that einsum as
transposes plus a batched MatMul, and its blocked (NCHWc) convolutions reorder their output
around it. Aggregating over the joints first is the same linear map,

    sum_k W_k x A_k  =  Conv[(1, K), stride (1, K)](x @ A'),   A'[v, w*K + k] = A_k[v, w],

one plain MatMul on the last axis and one convolution, with the BatchNorm folded into the
convolution. The conv bias turns into a per-(channel, joint) term ``b_k · colsum(A_k)`` (the learnt
adjacency's columns do not sum to one), added as a constant. On the shipped ST-GCN++ lite models
ONNX Runtime (CPU, batch 16) runs ~15 % faster; PyTorch itself gains nothing from it, so the
checkpoint and training keep the PYSKL form and only the export sees this one.

The multi-scale temporal convolution (``models.blocks.MSTCN``) opens five of its branches with a
1x1 conv + BatchNorm + ReLU on the same input; ``SharedEntryMSTCN`` runs them as one convolution
and splits its output: another 5-7 % at batch 16 on one thread (docs/benchmarks.md).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from models.blocks import MSTCN, UnitGCN


class AggregateFirstGCN(nn.Module):
    """``UnitGCN`` in eval mode, rewritten as MatMul over joints -> strided conv (+ folded BN)."""

    aggregate: Tensor  # (V, W*K)
    joint_bias: Tensor  # (C, 1, W)

    def __init__(self, gcn: UnitGCN) -> None:
        super().__init__()
        if gcn.training:
            raise ValueError("fuse an eval-mode model: BatchNorm uses its running statistics")
        with torch.no_grad():
            adjacency = gcn.A if gcn.importance is None else gcn.A * gcn.importance  # (K, V, W)
            k, v, w = adjacency.shape
            bn = gcn.bn
            mean, var = bn.running_mean, bn.running_var
            assert mean is not None and var is not None, "UnitGCN's BatchNorm tracks running statistics"
            c_out, c_in = bn.num_features, gcn.conv.in_channels
            scale = bn.weight / torch.sqrt(var + bn.eps)
            weight = gcn.conv.weight.reshape(k, c_out, c_in)  # W_k[c, ci]
            bias = (gcn.conv.bias if gcn.conv.bias is not None else torch.zeros(k * c_out)).reshape(k, c_out)
            self.register_buffer("aggregate", adjacency.permute(1, 2, 0).reshape(v, w * k).contiguous())
            self.conv = nn.Conv2d(c_in, c_out, (1, k), (1, k), bias=False)
            self.conv.weight.copy_((weight.permute(1, 2, 0) * scale[:, None, None]).unsqueeze(2))
            joint_bias = torch.einsum("kc,kw->cw", bias, adjacency.sum(1)) * scale[:, None]
            joint_bias += (bn.bias - scale * mean)[:, None]
            self.register_buffer("joint_bias", joint_bias.unsqueeze(1).contiguous())  # (C, 1, W)
        self.down = gcn.down
        self.act = gcn.act

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(torch.matmul(x, self.aggregate)) + self.joint_bias
        if self.down is not None:
            y = y + self.down(x)
        return self.act(y)


class SharedEntryMSTCN(nn.Module):
    """``MSTCN`` in eval mode with the 1x1 convolutions that open its branches run as one.

    Five of the six branches start with a 1x1 conv + BatchNorm + ReLU on the same input; one
    convolution to all their channels (BatchNorm folded), one ReLU and a split is the same
    map, with one pass over the input instead of five.
    """

    def __init__(self, tcn: MSTCN) -> None:
        super().__init__()
        if tcn.training:
            raise ValueError("fuse an eval-mode model: BatchNorm uses its running statistics")
        opened = [b for b in tcn.branches if isinstance(b, nn.Sequential) and len(b) == 4]
        rest = [b for b in tcn.branches if b not in opened]
        if [*opened, *rest] != list(tcn.branches):
            raise ValueError("expected the opened branches first (models.blocks.MSTCN)")
        folded = []
        for conv, bn, *_ in opened:
            if not (
                isinstance(conv, nn.Conv2d)
                and conv.kernel_size == conv.stride == (1, 1)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.running_mean is not None
                and bn.running_var is not None
            ):
                raise ValueError(f"a branch opens with {conv} and {bn}, not a 1x1 conv and a BatchNorm")
            folded.append(
                fuse_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
                )
            )
        weight = torch.cat([w for w, _ in folded])
        self.entry = nn.Conv2d(weight.shape[1], weight.shape[0], 1)
        with torch.no_grad():
            self.entry.weight.copy_(weight)
            self.entry.bias.copy_(torch.cat([bias for _, bias in folded]))  # type: ignore[union-attr]
        self.widths = [int(w.shape[0]) for w, _ in folded]
        self.act = nn.ReLU()
        self.tails = nn.ModuleList([b[3] for b in opened])
        self.rest = nn.ModuleList(rest)
        self.transform = tcn.transform
        self.bn = tcn.bn

    def forward(self, x: Tensor) -> Tensor:
        opened = torch.split(self.act(self.entry(x)), self.widths, dim=1)
        y = torch.cat([tail(z) for tail, z in zip(self.tails, opened, strict=True)]
                      + [branch(x) for branch in self.rest], dim=1)
        return self.bn(self.transform(y))


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ``UnitGCN`` and ``MSTCN`` rewritten; ``model`` is
    left as it is."""
    fused = copy.deepcopy(model).eval()
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, UnitGCN):
                setattr(parent, name, AggregateFirstGCN(child))
            elif isinstance(child, MSTCN):
                setattr(parent, name, SharedEntryMSTCN(child))
    return fused
