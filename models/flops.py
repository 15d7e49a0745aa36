"""Parameter and FLOP counts reported with every trained model (results table, manifest)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one eval-mode forward pass on a single input of ``input_shape`` (C, T, V).

    FlopCounterMode counts 2 FLOPs per multiply-add of conv/matmul/einsum (elementwise ops, BN and
    pooling are not counted, as in the papers' numbers).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
