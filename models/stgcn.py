"""The ST-GCN family backbone + classification head: (N, C=3, T, V) joints -> (N, K) logits.

ST-GCN, ST-GCN++ and the real-time variant differ only in block options and depth/width, so one
class builds all of them (as PYSKL's STGCN backbone does); ``models.registry`` names the presets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from models.blocks import Adaptive, STGCNBlock
from skeleton.layouts import JointLayout, get_layout

FEATURES = ("joint", "bone", "motion")


class InputFeatures(nn.Module):
    """Derive extra input streams inside the model from the raw (N, 3, T, V) joints.

    bone = joint - parent joint; motion = next frame - this frame (0 on the last frame). Computing
    them in the graph keeps the model's input contract (3 channels of normalised joints) and the
    shared preprocessing unchanged, while giving early fusion of PYSKL's j/b/jm streams.
    """

    def __init__(self, layout: JointLayout, features: Sequence[str]) -> None:
        super().__init__()
        unknown = set(features) - set(FEATURES)
        if unknown or not features:
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, got {list(features)}")
        self.features = tuple(features)
        v = layout.num_joints
        bone = np.eye(v, dtype=np.float32)
        for joint, parent in enumerate(layout.parents):
            bone[parent, joint] -= 1.0  # column v: x_v - x_parent(v); the centre's column is 0
        self.register_buffer("bone", torch.from_numpy(bone))

    @property
    def multiplier(self) -> int:
        return len(self.features)

    def forward(self, x: Tensor) -> Tensor:
        out = []
        for name in self.features:
            if name == "joint":
                out.append(x)
            elif name == "bone":
                out.append(torch.einsum("nctw,wv->nctv", x, self.bone))
            else:
                diff = x[:, :, 1:] - x[:, :, :-1]
                out.append(torch.cat([diff, torch.zeros_like(x[:, :, :1])], dim=2))
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)


class STGCNClassifier(nn.Module):
    """Data BN -> stacked ST-GCN blocks -> global average pool -> dropout -> linear."""

    def __init__(self, num_classes: int, layout: str = "kinect20", in_channels: int = 3,
                 features: Sequence[str] = ("joint",), base_channels: int = 64, num_stages: int = 10,
                 inflate_stages: Sequence[int] = (5, 8), down_stages: Sequence[int] = (5, 8),
                 ch_ratio: float = 2.0, adaptive: Adaptive = "importance", gcn_with_res: bool = False,
                 tcn: Literal["unit", "ms"] = "unit", tcn_kernel: int = 9, dropout: float = 0.0,
                 head_dropout: float = 0.0) -> None:
        super().__init__()
        graph = get_layout(layout)
        adjacency = torch.from_numpy(graph.spatial_partition())
        self.features = InputFeatures(graph, features)
        c_in = in_channels * self.features.multiplier
        self.data_bn = nn.BatchNorm1d(c_in * graph.num_joints)
        def block(cin: int, cout: int, stride: int, residual: bool = True, drop: float = 0.0) -> STGCNBlock:
            return STGCNBlock(cin, cout, adjacency, stride, residual, adaptive, gcn_with_res, tcn, tcn_kernel,
                              drop)

        blocks: list[nn.Module] = [block(c_in, base_channels, 1, residual=False)]
        channels, inflations = base_channels, 0
        self.block_channels = [base_channels]
        for stage in range(2, num_stages + 1):
            inflations += stage in inflate_stages
            out = int(base_channels * ch_ratio**inflations + 1e-6)
            stride = 2 if stage in down_stages else 1
            blocks.append(block(channels, out, stride, drop=dropout))
            channels = out
            self.block_channels.append(out)
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(head_dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_joints = graph.num_joints
        self.in_channels = in_channels

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features the head sees (the "penultimate" layer)."""
        return int(self.fc.in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.forward_features(x)))

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, C, T, V) -> (N, feature_dim) pooled backbone features (embeddings, few-shot baselines)."""
        return self.block_outputs(x)[-1].mean(dim=(2, 3))

    def block_outputs(self, x: Tensor) -> list[Tensor]:
        """Every block's (N, C_b, T_b, V) output, first to last (the embedding's readout reads several)."""
        x = self.features(x)
        c, t, v = x.shape[1], x.shape[2], x.shape[3]
        # BatchNorm over (C*V) per sample, as ST-GCN's data_bn: per-joint, per-axis statistics.
        x = self.data_bn(x.permute(0, 1, 3, 2).reshape(-1, c * v, t))
        x = x.reshape(-1, c, v, t).permute(0, 1, 3, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs
