"""Create models by architecture name from a config: one registry for training, export and tests.

Presets:
- ``stgcn``: ST-GCN (Yan et al., AAAI 2018): spatial-configuration partition with learnt edge
  importance, 10 blocks 64-64-64-64-128-128-128-256-256-256, 9x1 temporal convs.
- ``stgcnpp``: ST-GCN++ (PYSKL, Duan et al., ACM MM 2022): learnt 'init' adjacency, residual GCN,
  multi-scale temporal convs; same depth/width as ST-GCN.
- ``stgcnpp_lite``: the real-time variant, ST-GCN++ blocks, 6 blocks, half width.
Any preset argument can be overridden from the config's ``model.kwargs``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.stgcn import STGCNClassifier

PRESETS: dict[str, dict[str, Any]] = {
    "stgcn": dict(adaptive="importance", gcn_with_res=False, tcn="unit", tcn_kernel=9,
                  base_channels=64, num_stages=10, inflate_stages=(5, 8), down_stages=(5, 8)),
    "stgcnpp": dict(adaptive="init", gcn_with_res=True, tcn="ms",
                    base_channels=64, num_stages=10, inflate_stages=(5, 8), down_stages=(5, 8)),
    "stgcnpp_lite": dict(adaptive="init", gcn_with_res=True, tcn="ms",
                         base_channels=32, num_stages=6, inflate_stages=(3, 5), down_stages=(3, 5)),
}


def available() -> list[str]:
    return sorted(PRESETS)


def build_model(arch: str, num_classes: int, layout: str, **overrides: Any) -> nn.Module:
    """Instantiate preset ``arch`` for ``num_classes`` outputs on joint layout ``layout``."""
    if arch not in PRESETS:
        raise ValueError(f"unknown architecture {arch!r}; known: {available()}")
    kwargs = {**PRESETS[arch], **overrides}
    return STGCNClassifier(num_classes=num_classes, layout=layout, **kwargs)
