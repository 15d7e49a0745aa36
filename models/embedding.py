"""The embedding model: an ST-GCN-family backbone + projection head -> one L2-normalised vector.

Few-shot enrolment compares windows by cosine similarity of these vectors (prototype = mean of a
label's examples), so the model has no class head; the training losses
(``training.metric_learning``) keep their class weights outside it and the export sees only
``(N, 3, T, V) joints -> (N, dim) unit vectors``.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn
from torch.nn import functional as F

from models.registry import build_model
from models.stgcn import STGCNClassifier

Head = Literal["linear", "mlp"]


class SkeletonEmbedder(nn.Module):
    """Backbone features -> head -> unit vector. ``raw`` gives the head output before normalising
    (the softmax ablation's classifier reads it)."""

    def __init__(self, backbone: STGCNClassifier, dim: int = 128, head: Head = "mlp") -> None:
        super().__init__()
        width = backbone.feature_dim
        backbone.fc = nn.Identity()  # type: ignore[assignment]  # an embedding has no class head
        self.backbone = backbone
        self.head: nn.Module
        if head == "linear":
            self.head = nn.Linear(width, dim)
        else:
            self.head = nn.Sequential(
                nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, dim)
            )
        self.dim = dim

    def raw(self, x: Tensor) -> Tensor:
        return self.head(self.backbone.forward_features(x))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.raw(x), dim=1)


def build_embedder(
    arch: str, layout: str, dim: int = 128, head: Head = "mlp", **overrides: Any
) -> SkeletonEmbedder:
    """Preset ``arch`` (``models.registry``) as the backbone of a ``dim``-dimensional embedding."""
    backbone = build_model(arch, 1, layout, **overrides)
    if not isinstance(backbone, STGCNClassifier):
        raise TypeError(f"{arch} is not an ST-GCN-family model")
    return SkeletonEmbedder(backbone, dim, head)
