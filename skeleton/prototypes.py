"""Few-shot classification with an embedding model: examples -> prototypes -> label or unknown (numpy only).

The embedding model maps each window to a unit vector (``skeleton.manifest.EmbeddingSpec``). A
clip, a segment of it or a stream's recent seconds is several windows cut on the model's schedule
(``skeleton.clip.window_ends``); it becomes one vector by ``pool``: the normalised mean of its
window vectors. An example is such a pooled vector; a label's prototype is the normalised mean of
its examples; a query (one window, or a pooled clip) gets the label of the most similar prototype
(cosine), or ``unknown`` when that similarity is below the open-set threshold (``max_cosine``).
The same functions produce the offline few-shot numbers (training.fewshot) and serve.

An action set in the service judges a window relative to its nearest label (``relative_cosine``):
its cosine divided by that label's *spread*, how closely the label's own example windows agree
with their pooled vector (``spread``: the 10th percentile of their cosines, averaged over the
label's examples). A steady, repetitive action (jumping in place) has a spread near 1, a varied
one (walking across a room) a lower one, so one threshold asks each label for what its own examples
showed (chosen across UP-Fall trials, docs/fewshot.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from skeleton.open_set import softmax

UNKNOWN = "unknown"


def normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    v = np.asarray(vectors, np.float32)
    return np.asarray(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps), np.float32)


def pool(window_vectors: np.ndarray) -> np.ndarray:
    """(W, D) window embeddings of one clip/segment -> its (D,) unit vector (normalised mean)."""
    w = np.asarray(window_vectors, np.float32)
    if w.ndim != 2 or w.shape[0] == 0:
        raise ValueError(f"expected (W>0, D) window embeddings, got {w.shape}")
    return normalize(normalize(w).mean(axis=0))


SPREAD_PERCENTILE = 10.0
MIN_SPREAD = 0.1  # a label's spread is at least this, so a relative cosine lies in [-10, 10]


def spread(window_vectors: np.ndarray, vector: np.ndarray) -> float:
    """How tightly an example's windows agree: the 10th percentile of their cosines to its pooled
    ``vector`` (1.0 for a one-window example)."""
    return float(np.percentile(normalize(window_vectors) @ normalize(vector), SPREAD_PERCENTILE))


def relative_cosine(cosine: np.ndarray, label_spread: np.ndarray) -> np.ndarray:
    """A cosine to a label's prototype over that label's spread (at least ``MIN_SPREAD``)."""
    return np.asarray(cosine / np.maximum(label_spread, MIN_SPREAD))


@dataclass(frozen=True)
class Prediction:
    """Per query: the nearest label (or ``UNKNOWN``), its cosine similarity and softmax confidence."""

    labels: list[str]
    similarity: np.ndarray  # (N,) cosine to the nearest prototype
    confidence: np.ndarray  # (N,) softmax(logit_scale * cosine) of that label
    known: np.ndarray  # (N,) bool


@dataclass(frozen=True)
class PrototypeSet:
    """One prototype per label: the normalised mean of its examples' unit vectors."""

    labels: tuple[str, ...]
    vectors: np.ndarray  # (L, D) unit rows
    spreads: np.ndarray | None = None  # (L,) each label's mean example spread; None: all 1

    @classmethod
    def from_examples(
        cls,
        examples: Mapping[str, Sequence[np.ndarray] | np.ndarray],
        spreads: Mapping[str, Sequence[float]] | None = None,
    ) -> PrototypeSet:
        """``examples``: label -> its examples' (pooled) vectors, one row each; ``spreads``: label ->
        its examples' ``spread`` values (for ``relative_scores``)."""
        labels, rows, label_spreads = [], [], []
        for label, vecs in examples.items():
            v = np.atleast_2d(np.asarray(vecs, np.float32))
            if v.shape[0] == 0:
                continue
            labels.append(label)
            rows.append(pool(v))  # the prototype: the label's examples pooled as a window's are
            if spreads is not None:
                label_spreads.append(float(np.mean(spreads[label])))
        if not rows:
            raise ValueError("no examples: enrol at least one example of one label")
        return cls(tuple(labels), np.stack(rows), None if spreads is None else np.array(label_spreads))

    def relative_scores(self, sims: np.ndarray) -> np.ndarray:
        """(N, L) cosines -> (N,) ``relative_cosine``: the best cosine over its label's spread."""
        best = sims.argmax(axis=1)
        top = sims[np.arange(len(sims)), best]
        if self.spreads is None:
            return np.asarray(top)
        return relative_cosine(top, self.spreads[best])

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(N, D) query vectors -> (N, L) cosine similarities."""
        return np.asarray(normalize(np.atleast_2d(queries)) @ self.vectors.T)

    def predict(
        self, queries: np.ndarray, threshold: float | None = None, logit_scale: float = 16.0
    ) -> Prediction:
        """Nearest prototype per query; ``unknown`` below ``threshold`` (None: never unknown)."""
        sims = self.similarities(queries)
        best = sims.argmax(axis=1)
        top = sims[np.arange(len(sims)), best]
        conf = softmax(sims, logit_scale)[np.arange(len(sims)), best]
        known = np.ones(len(sims), bool) if threshold is None else top >= threshold
        labels = [self.labels[b] if k else UNKNOWN for b, k in zip(best, known, strict=True)]
        return Prediction(labels, top, conf, known)


CheckOutcome = Literal["right", "confused", "unknown", "distinct", "overlaps"]


@dataclass(frozen=True)
class ExampleCheck:
    """One example judged by the rest of its set (``leave_one_out``).

    ``outcome``: ``right`` (its own label, at the bar), ``confused`` (another label, at that
    label's bar), ``unknown`` (below every bar); for an example that is its label's only one, which
    the rest of the set cannot recognise: ``distinct`` (below every other label's bar, as a label
    of its own should be) or ``overlaps`` (another label would take it)."""

    label: str
    nearest: str  # the label the rest of the set gives it (before the bar)
    score: float | None  # its relative cosine to ``nearest`` (None: no other example to compare)
    outcome: CheckOutcome


def leave_one_out(
    labels: Sequence[str], vectors: np.ndarray, spreads: Sequence[float], threshold: float
) -> list[ExampleCheck]:
    """Each example (``labels[i]``, unit-ish ``vectors[i]``, ``spreads[i]``) classified by the
    prototypes of all the other examples, by ``relative_cosine`` and ``threshold``: how a set's
    examples agree with each other. Prototypes as ``PrototypeSet.from_examples`` makes them (the
    normalised sum of a label's unit vectors, its examples' mean spread), each without the example:
    one product of the examples with the labels' sums gives every cosine, the example's own label's
    from its sum minus itself."""
    v = normalize(vectors)
    names = tuple(dict.fromkeys(labels))
    index = np.array([names.index(x) for x in labels])
    rows = np.arange(len(labels))
    sums = np.stack([v[index == k].sum(axis=0) for k in range(len(names))]).astype(np.float64)
    counts = np.bincount(index, minlength=len(names))
    spread_sums = np.bincount(index, weights=np.asarray(spreads, np.float64), minlength=len(names))
    dots = v.astype(np.float64) @ sums.T  # (N, L): each example with each label's sum
    sq = (sums * sums).sum(axis=1)
    sims = dots / np.sqrt(np.maximum(sq, 1e-24))
    self_dot = (v * v).sum(axis=1)  # 1, or 0 for an all-zero vector
    own_dot = dots[rows, index] - self_dot  # with its label's sum minus itself
    own_sq = sq[index] - 2 * dots[rows, index] + self_dot
    alone = counts[index] == 1
    sims[rows, index] = np.where(alone, -np.inf, own_dot / np.sqrt(np.maximum(own_sq, 1e-24)))
    label_spreads = np.tile(spread_sums / np.maximum(counts, 1), (len(labels), 1))
    label_spreads[rows, index] = (spread_sums[index] - np.asarray(spreads)) / np.maximum(counts[index] - 1, 1)
    best = sims.argmax(axis=1)
    scores = relative_cosine(sims[rows, best], label_spreads[rows, best])
    out = []
    for i in rows:
        if not np.isfinite(sims[i, best[i]]):  # a set of one example: nothing to compare
            out.append(ExampleCheck(labels[i], UNKNOWN, None, "distinct"))
            continue
        score, nearest = float(scores[i]), names[best[i]]
        outcome: CheckOutcome
        if alone[i]:
            outcome = "overlaps" if score >= threshold else "distinct"
        elif score < threshold:
            outcome = "unknown"
        else:
            outcome = "right" if nearest == labels[i] else "confused"
        out.append(ExampleCheck(labels[i], nearest, score, outcome))
    return out
