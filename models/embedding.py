"""The embedding model: an ST-GCN-family backbone + projection head -> one L2-normalised vector.

Few-shot enrolment compares windows by cosine similarity of these vectors (prototype = mean of a
label's examples), so the model has no class head; the training losses
(``training.metric_learning``) keep their class weights outside it and the export sees only
``(N, 3, T, V) joints -> (N, dim) unit vectors``.

The losses act on the projection head's output (globally pooled backbone features). What the model
outputs is chosen by few-shot validation on actions it was not trained on (docs/fewshot.md):
``head`` (what the losses saw), ``backbone`` (the pooled features before the head; as with
SimCLR's projection head they keep more of what the training actions did not need), or
``joints``, the shipped readout (``joint_readout``): every second block's features averaged over
each half of the window, per joint, so *which* joints move and in which order survives the
pooling -- what an unseen action (legs, when the training actions move the arms) needs.

The output is centred: ``normalise(normalise(v) - centre)``, with ``centre`` the mean output over
the training windows (``training.metric_learning.fit_centre``; zeros, a no-op, until fitted). Every
window shares a large common component (the readout is non-negative), so raw cosines crowd near 1;
removing it spreads them and lifted few-shot top-1 on unseen actions on every split, chosen on
training subjects only (docs/fewshot.md "Centred readout"). It is a buffer of the model, so the
exported ONNX graph, the few-shot protocol and the service's action sets apply the same rule.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.registry import build_model
from models.stgcn import STGCNClassifier

Head = Literal["linear", "mlp"]
Output = Literal["joints", "backbone", "head"]
HeadInput = Literal["pooled", "joints"]


def readout_blocks(backbone: STGCNClassifier) -> list[int]:
    """The blocks ``joint_readout`` reads: every second one, ending with the last."""
    n = len(backbone.block_channels)
    return list(range(n - 1, -1, -2))[::-1]


def joint_readout(backbone: STGCNClassifier, x: Tensor) -> Tensor:
    """(N, 3, T, V) -> (N, sum_b 2 * C_b * V): for each read block, its (C_b, T_b, V) output averaged
    over the first and over the second half of T_b (order: which half), per joint, L2-normalised;
    the blocks concatenated (each weighs the same in a cosine)."""
    outs = backbone.block_outputs(x)
    parts = []
    for b in readout_blocks(backbone):
        o = outs[b]
        half = o.shape[2] // 2
        pooled = torch.cat([o[:, :, :half].mean(dim=2), o[:, :, half:].mean(dim=2)], dim=1)
        parts.append(F.normalize(pooled.flatten(1), dim=1))
    return torch.cat(parts, dim=1)


def joint_readout_dim(backbone: STGCNClassifier) -> int:
    return sum(2 * backbone.block_channels[b] * backbone.num_joints for b in readout_blocks(backbone))


class SkeletonEmbedder(nn.Module):
    """Backbone features -> head -> unit vector. ``raw`` gives the head output before normalising
    (the softmax ablation's classifier reads it)."""

    def __init__(
        self,
        backbone: STGCNClassifier,
        dim: int = 128,
        head: Head = "mlp",
        output: Output = "joints",
        head_input: HeadInput = "pooled",
    ) -> None:
        super().__init__()
        width = backbone.feature_dim
        backbone.fc = nn.Identity()  # type: ignore[assignment]  # an embedding has no class head
        self.backbone = backbone
        self.head_input = head_input
        fan_in = joint_readout_dim(backbone) if head_input == "joints" else width
        self.head: nn.Module
        if head == "linear":
            self.head = nn.Linear(fan_in, dim)
        else:
            self.head = nn.Sequential(
                nn.Linear(fan_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, dim)
            )
        self.output = output
        self.dim = {"joints": joint_readout_dim(backbone), "backbone": width, "head": dim}[output]
        self.centre: Tensor
        self.register_buffer("centre", torch.zeros(self.dim))

    def raw(self, x: Tensor) -> Tensor:
        feats = (
            joint_readout(self.backbone, x)
            if self.head_input == "joints"
            else self.backbone.forward_features(x)
        )
        return self.head(feats)

    def forward(self, x: Tensor) -> Tensor:
        if self.output == "joints":
            out = joint_readout(self.backbone, x)
        else:
            out = self.backbone.forward_features(x) if self.output == "backbone" else self.raw(x)
        return F.normalize(F.normalize(out, dim=1) - self.centre, dim=1)


def build_embedder(
    arch: str,
    layout: str,
    dim: int = 128,
    head: Head = "mlp",
    output: Output = "joints",
    head_input: HeadInput = "pooled",
    **overrides: Any,
) -> SkeletonEmbedder:
    """Preset ``arch`` (``models.registry``) as the backbone of a ``dim``-dimensional embedding."""
    backbone = build_model(arch, 1, layout, **overrides)
    if not isinstance(backbone, STGCNClassifier):
        raise TypeError(f"{arch} is not an ST-GCN-family model")
    return SkeletonEmbedder(backbone, dim, head, output, head_input)
