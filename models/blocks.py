"""Compact ST-GCN-family building blocks in the style of PYSKL (Duan et al., 2022).

One graph-convolution unit and two temporal units cover ST-GCN (fixed partition with an
edge-importance mask, one 9x1 temporal conv) and ST-GCN++ (learnt 'init' adjacency,
residual GCN, multi-scale temporal conv). Everything is conv/einsum/pool so the models
export to ONNX with a dynamic batch axis.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Adaptive = Literal["fixed", "importance", "init"]


class UnitGCN(nn.Module):
    """Spatial graph convolution: a 1x1 conv per adjacency subset, aggregated by one einsum.

    ``adaptive``: 'fixed' keeps the partition; 'importance' learns an elementwise edge mask
    (ST-GCN's edge-importance weighting); 'init' learns the adjacency itself, initialised from
    the partition (PYSKL's ST-GCN++), which lets the model add links the skeleton lacks.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor,
                 adaptive: Adaptive = "importance", with_res: bool = False) -> None:
        super().__init__()
        self.num_subsets = int(adjacency.shape[0])
        self.adaptive = adaptive
        if adaptive == "init":
            self.A = nn.Parameter(adjacency.clone())
        else:
            self.register_buffer("A", adjacency.clone())
        self.importance = nn.Parameter(torch.ones_like(adjacency)) if adaptive == "importance" else None
        self.conv = nn.Conv2d(in_channels, out_channels * self.num_subsets, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.down: nn.Module | None = None
        if with_res:
            self.down = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        adjacency = self.A if self.importance is None else self.A * self.importance
        y = self.conv(x).unflatten(1, (self.num_subsets, -1))  # (N, K, C, T, V)
        y = torch.einsum("nkctv,kvw->nctw", y, adjacency)
        y = self.bn(y)
        if self.down is not None:
            y = y + self.down(x)
        return self.act(y)


class UnitTCN(nn.Module):
    """Temporal conv (k x 1) over each joint, then BN and dropout."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1,
                 dilation: int = 1, dropout: float = 0.0, norm: bool = True) -> None:
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), (stride, 1), (pad, 0),
                              (dilation, 1))
        self.bn: nn.Module = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.bn(self.conv(x)))


class MSTCN(nn.Module):
    """Multi-scale temporal conv of ST-GCN++: dilated 3x1 branches, a max-pool branch and a 1x1.

    Several receptive fields at a fraction of one wide kernel's cost.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0,
                 dilations: tuple[int, ...] = (1, 2, 3, 4)) -> None:
        super().__init__()
        num_branches = len(dilations) + 2
        mid = out_channels // num_branches
        first = out_channels - mid * (num_branches - 1)
        widths = [first] + [mid] * (num_branches - 1)
        branches: list[nn.Module] = []
        for width, dil in zip(widths, dilations, strict=False):
            branches.append(nn.Sequential(
                nn.Conv2d(in_channels, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
                UnitTCN(width, width, 3, stride, dil, norm=False)))
        w_max, w_1x1 = widths[-2], widths[-1]
        branches.append(nn.Sequential(
            nn.Conv2d(in_channels, w_max, 1), nn.BatchNorm2d(w_max), nn.ReLU(),
            nn.MaxPool2d((3, 1), (stride, 1), (1, 0))))
        branches.append(nn.Conv2d(in_channels, w_1x1, 1, (stride, 1)))
        self.branches = nn.ModuleList(branches)
        self.transform = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(),
                                       nn.Conv2d(out_channels, out_channels, 1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.drop(self.bn(self.transform(y)))


class STGCNBlock(nn.Module):
    """GCN then TCN with a residual connection (identity, or a strided 1x1 conv when shapes change)."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: Tensor, stride: int = 1,
                 residual: bool = True, adaptive: Adaptive = "importance", gcn_with_res: bool = False,
                 tcn: Literal["unit", "ms"] = "unit", tcn_kernel: int = 9, dropout: float = 0.0) -> None:
        super().__init__()
        self.gcn = UnitGCN(in_channels, out_channels, adjacency, adaptive, gcn_with_res)
        self.tcn: nn.Module = (MSTCN(out_channels, out_channels, stride, dropout) if tcn == "ms"
                               else UnitTCN(out_channels, out_channels, tcn_kernel, stride, dropout=dropout))
        self.residual: nn.Module | None
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = UnitTCN(in_channels, out_channels, 1, stride)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.tcn(self.gcn(x))
        if self.residual is not None:
            y = y + self.residual(x)
        return self.act(y)
