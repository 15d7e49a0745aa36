"""K trained models served as one: classifiers by the mean of their class probabilities
(``ProbabilityEnsemble``), embeddings by the mean of their cosines (``EmbeddingEnsemble``).

A classifier is one graph whose output ``logits`` the service turns into probabilities with a
softmax. Its ensemble therefore outputs ``log(mean_k softmax(f_k(x)))``, computed stably as
``logsumexp_k(log_softmax(f_k(x))) - log K``: its softmax is exactly the members' mean
probability (the rows already sum to one), so nothing downstream -- the clip rule, the fall
rule, ``max_softmax`` open-set scores -- needs to know it is an ensemble. Scores read from raw
logits (``max_logit``, ``energy``) would change meaning; ``export`` refuses an ensemble with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

COMBINE = "mean_probability"


class ProbabilityEnsemble(nn.Module):
    """(N, C, T, V) -> (N, K) log mean probability of ``members`` (same labels, same input)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.log_k = math.log(len(members))

    def forward(self, x: Tensor) -> Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - self.log_k


class EmbeddingEnsemble(nn.Module):
    """(N, C, T, V) -> (N, K * D): the members' unit vectors concatenated and divided by sqrt(K).

    The result is a unit vector whose cosine with another is the mean of the members' cosines, so
    prototypes, nearest-prototype labels and every cosine threshold work on it unchanged; each member
    keeps its own centre (``models.embedding``). Members are seeds of one recipe (same input)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.scale = 1.0 / math.sqrt(len(members))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([m(x) for m in self.members], dim=1) * self.scale
