"""Candidate open-set scores for action sets, compared across UP-Fall trials
(``python -m training.upfall_fewshot compare-scores``; the service ships ``relative``).

Each candidate reads a set the way the service stores it (one example per label: its windows'
embeddings, pooled into the prototype) and gives, for query windows, their cosines to the prototypes
(the probabilities come from these) and one open-set score per window (below the threshold:
``unknown``). The alternatives address two suspected weaknesses of ``relative``: a varied label's
pooled mean is near many things (a hub), and one example's spread is a noisy estimate. Round 7
(docs/action-sets.md): none beat ``relative`` in both directions, so they stay here, measured, not
in the service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from skeleton.prototypes import MIN_SPREAD, SPREAD_PERCENTILE, PrototypeSet, normalize, pool, spread

# (each label's example windows, query windows) -> ((N, L) cosines to the prototypes, (N,) score)
Score = Callable[[Sequence[np.ndarray], np.ndarray], tuple[np.ndarray, np.ndarray]]


def _prototypes(examples: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([pool(w) for w in examples])


def _nearest(
    examples: Sequence[np.ndarray], queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sims = normalize(queries) @ _prototypes(examples).T
    best = sims.argmax(axis=1)
    return sims, best, sims[np.arange(len(sims)), best]


def relative(examples: Sequence[np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The service's score (``skeleton.prototypes``): the best cosine over that label's spread."""
    labels = [str(i) for i in range(len(examples))]
    protos = PrototypeSet.from_examples(
        {k: pool(w)[None] for k, w in zip(labels, examples, strict=True)},
        {k: [spread(w, pool(w))] for k, w in zip(labels, examples, strict=True)},
    )
    sims = protos.similarities(queries)
    return sims, protos.relative_scores(sims)


def spread_variant(
    examples: Sequence[np.ndarray],
    queries: np.ndarray,
    percentile: float = SPREAD_PERCENTILE,
    power: float = 1.0,
    floor: float = MIN_SPREAD,
) -> tuple[np.ndarray, np.ndarray]:
    """cosine / max(spread, floor) ** power, the spread at another percentile (power 0: the cosine)."""
    sims, best, top = _nearest(examples, queries)
    spreads = np.array([np.percentile(normalize(w) @ pool(w), percentile) for w in examples])
    return sims, top / np.maximum(spreads[best], floor) ** power


def _member_slices(vectors: np.ndarray, members: int) -> list[np.ndarray]:
    """An ensemble's output is its members' unit vectors side by side: each member's, unit again."""
    d = vectors.shape[-1] // members
    return [normalize(vectors[..., i * d : (i + 1) * d]) for i in range(members)]


def members_min(
    examples: Sequence[np.ndarray], queries: np.ndarray, members: int = 9, vote: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Each member's own relative cosine (its slices, its spreads); the lowest of them. ``vote``:
    the ensemble's relative cosine instead, but -inf where fewer than half the members have the
    ensemble's nearest label as their own."""
    sims = relative(examples, queries)[0]
    best = sims.argmax(axis=1)
    own, agree = [], np.zeros(len(queries))
    for m, q in enumerate(_member_slices(queries, members)):
        ex = [_member_slices(w, members)[m] for w in examples]
        s_m, rel_m = relative(ex, q)
        own.append(rel_m)
        agree += s_m.argmax(axis=1) == best
    if vote:
        score = relative(examples, queries)[1]
        return sims, np.where(agree >= members / 2, score, -np.inf)
    return sims, np.min(own, axis=0)


def nearest_window(
    examples: Sequence[np.ndarray], queries: np.ndarray, relative_to_own: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The best cosine to any example window of the nearest label (not to its pooled mean);
    ``relative_to_own``: over that label's windows' own nearest-neighbour cosine (10th percentile,
    leaving each window out)."""
    sims, best, _ = _nearest(examples, queries)
    wins = [normalize(w) for w in examples]
    q = normalize(queries)
    score = np.array([float((wins[b] @ x).max()) for x, b in zip(q, best, strict=True)])
    if relative_to_own:
        own = []
        for w in wins:
            g = w @ w.T
            np.fill_diagonal(g, -np.inf)
            own.append(float(np.percentile(g.max(axis=1), SPREAD_PERCENTILE)) if len(w) > 1 else 1.0)
        score = score / np.maximum(np.array(own)[best], MIN_SPREAD)
    return sims, score


def candidates(members: int) -> dict[str, Score]:
    """Every score compared in round 7, the shipped one first; ``members``: the embedding's."""
    found: dict[str, Score] = {
        "relative (shipped): cosine / spread": relative,
        "cosine / spread^0.5": partial(spread_variant, power=0.5),
        "cosine": partial(spread_variant, power=0.0),
        "cosine / spread at the 25th percentile": partial(spread_variant, percentile=25.0),
        "cosine / spread at the 50th percentile": partial(spread_variant, percentile=50.0),
        "nearest example window": nearest_window,
        "nearest example window / its own spread": partial(nearest_window, relative_to_own=True),
    }
    for floor in (0.65, 0.7, 0.75, 0.8):
        found[f"cosine / max(spread, {floor})"] = partial(spread_variant, floor=floor)
    if members > 1:
        found["lowest member's relative cosine"] = partial(members_min, members=members)
        found["relative, members' majority vote"] = partial(members_min, members=members, vote=True)
    return found
