"""Load a training checkpoint back into a model + its config (export, tests, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import build_model
from models.ensemble import EmbeddingEnsemble, ProbabilityEnsemble
from skeleton.manifest import EnsembleSpec
from training.config import TrainConfig


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    config: TrainConfig
    labels: list[str]
    label_groups: dict[str, list[str]]
    metrics: dict[str, Any]
    path: Path
    ensemble: EnsembleSpec | None = None  # the members, when ``model`` is an ensemble


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """The eval-mode model and everything recorded with it by ``training.train`` (or, for an
    ensemble written by ``training.ensemble``, its members inside one ``ProbabilityEnsemble``, or
    ``EmbeddingEnsemble`` for embeddings)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.model_validate(ckpt["config"])
    if "members" in ckpt:
        members = [_build(TrainConfig.model_validate(m["config"]), m) for m in ckpt["members"]]
        combined = EmbeddingEnsemble(members) if cfg.embedding is not None else ProbabilityEnsemble(members)
        return LoadedCheckpoint(combined.eval(), cfg, list(ckpt["labels"]),
                                dict(ckpt["label_groups"]), dict(ckpt["metrics"]), path,
                                EnsembleSpec.model_validate(ckpt["ensemble"]))
    return LoadedCheckpoint(_build(cfg, ckpt), cfg, list(ckpt["labels"]), dict(ckpt["label_groups"]),
                            dict(ckpt["metrics"]), path)


def _build(cfg: TrainConfig, ckpt: dict[str, Any]) -> nn.Module:
    model: nn.Module
    if cfg.embedding is not None:  # an embedding (training.metric_learning): unit vectors, no labels out
        from training.metric_learning import build_embedding_model

        model = build_embedding_model(cfg)
        ckpt["state_dict"].setdefault("centre", model.centre)  # saved before the centred readout: zeros
    else:
        model = build_model(cfg.model.arch, len(ckpt["labels"]), cfg.input.layout, **cfg.model.kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
