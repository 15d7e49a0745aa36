"""Open-set rejection: the score that says how well a window or clip fits any known label (numpy only).

One rule for every model: a window is ``unknown`` when ``score < threshold``, with the score named
in the manifest (``skeleton.manifest.OpenSetSpec``); a clip when most of its windows are
(``clip_score``). Classifiers score their logits (maximum softmax
probability, maximum logit, or the negative energy ``logsumexp(logits)``); an embedding with
enrolled prototypes scores the cosine similarity to the nearest prototype. How each threshold was
chosen is recorded next to it (docs/fewshot.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from skeleton.manifest import OpenSetSpec

LOGIT_SCORES = ("max_softmax", "max_logit", "energy")
SIMILARITY_SCORES = ("max_cosine", "relative_cosine")  # relative_cosine: PrototypeSet.relative_scores


def softmax(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scale * logits`` (float64, stable)."""
    z = np.asarray(logits, np.float64) * scale
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def open_set_score(score: str, values: np.ndarray) -> np.ndarray:
    """(N,) scores of (N, K) logits (classifier scores) or cosine similarities (``max_cosine``);
    higher means more like a known label."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"expected (N, K>0) values, got {v.shape}")
    if score == "max_softmax":
        return np.asarray(softmax(v).max(axis=1))
    if score in ("max_logit", "max_cosine", "relative_cosine"):  # relative: without spreads, the max
        return np.asarray(v.max(axis=1))
    if score == "energy":
        m = v.max(axis=1)
        return np.asarray(m + np.log(np.exp(v - m[:, None]).sum(axis=1)))
    raise ValueError(f"unknown open-set score {score!r}; use one of {LOGIT_SCORES + SIMILARITY_SCORES}")


def is_unknown(spec: OpenSetSpec, values: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """(N,) bool: rows of ``values`` whose score is below the manifest's (or an overriding) threshold."""
    t = spec.threshold if threshold is None else threshold
    return np.asarray(open_set_score(spec.score, values) < t)


def with_unknown_column(probs: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """(N, K) window probabilities -> (N, K + 1) over ``labels + ["unknown"]``: an unknown window
    gets ``[0, ..., 0, 1]``, every other window its own probabilities and 0 for ``unknown``. A
    clip's mean over these says ``unknown`` when its unknown windows outweigh every label."""
    p = np.asarray(probs)
    out = np.concatenate([p, np.zeros((len(p), 1), p.dtype)], axis=1)
    out[unknown] = 0.0
    out[unknown, -1] = 1.0
    return out


def clip_score(window_scores: np.ndarray) -> float:
    """A clip's (or segment's) score from its windows' scores: their median, so a clip is unknown
    exactly when most of its windows are. An untrimmed clip (stand, fall, lie) is judged by what it
    mostly shows, not by a mean that its transitions drag down."""
    w = np.asarray(window_scores, np.float64)
    if w.size == 0:
        raise ValueError("a clip needs at least one window score")
    return float(np.median(w))
