"""Candidate open-set scores for action sets, compared across UP-Fall trials
(``python -m training.upfall_fewshot compare-scores``; the service ships ``relative``).

Each candidate reads a set the way the service stores it (one example per label: its windows'
embeddings, pooled into the prototype): fitted once on the labels' example windows, it gives, for
query windows, their cosines to the prototypes (the probabilities come from these) and one open-set
score per window (below the threshold: ``unknown``). The alternatives address two suspected
weaknesses of ``relative``: a varied label's pooled mean is near many things (a hub), and one
example's spread is a noisy estimate. Round 7 (docs/action-sets.md): none beat ``relative`` in both
directions, so they stay here, measured, not in the service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from skeleton.prototypes import MIN_SPREAD, SPREAD_PERCENTILE, PrototypeSet, normalize, pool, spread

# query windows -> ((N, L) cosines to the prototypes, (N,) open-set score)
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# each label's example windows -> its scorer
Score = Callable[[Sequence[np.ndarray]], Scorer]


def _nearest(prototypes: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sims = normalize(queries) @ prototypes.T
    best = sims.argmax(axis=1)
    return sims, best, sims[np.arange(len(sims)), best]


def relative(examples: Sequence[np.ndarray]) -> Scorer:
    """The service's score (``skeleton.prototypes``): the best cosine over that label's spread."""
    pooled = [pool(w) for w in examples]
    labels = [str(i) for i in range(len(examples))]
    protos = PrototypeSet.from_examples(
        {k: p[None] for k, p in zip(labels, pooled, strict=True)},
        {k: [spread(w, p)] for k, w, p in zip(labels, examples, pooled, strict=True)},
    )

    def scorer(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = protos.similarities(queries)
        return sims, protos.relative_scores(sims)

    return scorer


def spread_variant(
    examples: Sequence[np.ndarray],
    percentile: float = SPREAD_PERCENTILE,
    power: float = 1.0,
    floor: float = MIN_SPREAD,
) -> Scorer:
    """cosine / max(spread, floor) ** power, the spread at another percentile (power 0: the cosine)."""
    protos = np.stack([pool(w) for w in examples])
    spreads = np.array(
        [np.percentile(normalize(w) @ p, percentile) for w, p in zip(examples, protos, strict=True)]
    )
    bar = np.maximum(spreads, floor) ** power

    def scorer(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, best, top = _nearest(protos, queries)
        return sims, top / bar[best]

    return scorer


def _member_slices(vectors: np.ndarray, members: int) -> list[np.ndarray]:
    """An ensemble's output is its members' unit vectors side by side: each member's, unit again."""
    d = vectors.shape[-1] // members
    return [normalize(vectors[..., i * d : (i + 1) * d]) for i in range(members)]


def members_min(examples: Sequence[np.ndarray], members: int = 9, vote: bool = False) -> Scorer:
    """Each member's own relative cosine (its slices, its spreads); the lowest of them. ``vote``:
    the ensemble's relative cosine instead, but -inf where fewer than half the members have the
    ensemble's nearest label as their own."""
    ensemble = relative(examples)
    sliced = [_member_slices(w, members) for w in examples]
    own = [relative([s[m] for s in sliced]) for m in range(members)]

    def scorer(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, score = ensemble(queries)
        best = sims.argmax(axis=1)
        rel, agree = [], np.zeros(len(queries))
        for m, q in enumerate(_member_slices(queries, members)):
            s_m, rel_m = own[m](q)
            rel.append(rel_m)
            agree += s_m.argmax(axis=1) == best
        if vote:
            return sims, np.where(agree >= members / 2, score, -np.inf)
        return sims, np.min(rel, axis=0)

    return scorer


def nearest_window(examples: Sequence[np.ndarray], relative_to_own: bool = False) -> Scorer:
    """The best cosine to any example window of the nearest label (not to its pooled mean);
    ``relative_to_own``: over that label's windows' own nearest-neighbour cosine (10th percentile,
    leaving each window out)."""
    protos = np.stack([pool(w) for w in examples])
    wins = [normalize(w) for w in examples]
    own = np.ones(len(wins))
    if relative_to_own:
        for i, w in enumerate(wins):
            g = w @ w.T
            np.fill_diagonal(g, -np.inf)
            nearest = float(np.percentile(g.max(axis=1), SPREAD_PERCENTILE)) if len(w) > 1 else 1.0
            own[i] = max(nearest, MIN_SPREAD)

    def scorer(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, best, _ = _nearest(protos, queries)
        q = normalize(queries)
        score = np.array([float((wins[b] @ x).max()) for x, b in zip(q, best, strict=True)])
        return sims, score / own[best]

    return scorer


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
