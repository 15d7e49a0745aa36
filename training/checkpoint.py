"""Load a training checkpoint back into a model + its config (export, tests, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import build_model
from training.config import TrainConfig


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    config: TrainConfig
    labels: list[str]
    label_groups: dict[str, list[str]]
    metrics: dict[str, Any]
    path: Path


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """The eval-mode model and everything recorded with it by ``training.train``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.model_validate(ckpt["config"])
    model: nn.Module
    if cfg.embedding is not None:  # an embedding (training.metric_learning): unit vectors, no labels out
        from training.metric_learning import build_embedding_model

        model = build_embedding_model(cfg)
        ckpt["state_dict"].setdefault("centre", model.centre)  # saved before the centred readout: zeros
    else:
        model = build_model(cfg.model.arch, len(ckpt["labels"]), cfg.input.layout, **cfg.model.kwargs)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return LoadedCheckpoint(model, cfg, list(ckpt["labels"]), dict(ckpt["label_groups"]),
                            dict(ckpt["metrics"]), path)
