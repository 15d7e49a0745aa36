"""PyTorch model definitions (ST-GCN family); input (N, 3, T, V) joints, output (N, K) logits."""

from models.flops import count_flops, count_params
from models.registry import PRESETS, available, build_model
from models.stgcn import STGCNClassifier

__all__ = ["PRESETS", "STGCNClassifier", "available", "build_model", "count_flops", "count_params"]
