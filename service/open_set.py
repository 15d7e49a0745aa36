"""``unknown`` for every model: a per-request view of a model whose windows below the open-set
threshold are given to one more label, ``unknown``.

Each window's open-set score comes with its probabilities (`BatchResult.scores`: the manifest's
``open_set.score`` of a classifier's logits, the cosine to the nearest prototype of an action set).
A window scoring below the threshold gets the probabilities ``[0, …, 0, 1]`` over ``labels +
["unknown"]``; every other window its own, with 0 for ``unknown``. Everything downstream is
unchanged and says ``unknown`` by itself: the stream's smoother (EMA + hysteresis), the clip's
timeline segments, and the clip label (``skeleton.clip.decide``: the mean over the primary
person's windows, so a clip is ``unknown`` when its unknown windows outweigh every label: more than
half of them unknown always does). A window showing a fall (its fall classes' probability at the
fall rule's threshold) is never made unknown: the fall rule sees every fall window it saw before.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from service.batching import BatcherView, BatchResult, WindowBatcher
from service.classifier import score_name
from service.core.errors import ServiceError
from service.falls import rule_for
from service.registry import LoadedModel
from skeleton.falls import FallRule
from skeleton.open_set import with_unknown_column
from skeleton.prototypes import UNKNOWN

__all__ = ["UNKNOWN", "UnknownBatcher", "check_threshold", "default_threshold", "with_unknown"]

# the range of each score, for validation (max_logit and energy are unbounded)
_RANGES = {"max_softmax": (0.0, 1.0), "max_cosine": (-1.0, 1.0), "relative_cosine": (-10.0, 10.0)}


def score_of(model: LoadedModel) -> str:
    """The score a model's windows are judged by."""
    m = model.manifest
    if m.kind == "embedding" or m.embedding is not None:
        return m.open_set.score if m.open_set is not None else "max_cosine"
    return score_name(m)


def default_threshold(model: LoadedModel) -> float | None:
    """The manifest's threshold (None: the model never says unknown unless a request asks)."""
    spec = model.manifest.open_set
    return None if spec is None else spec.threshold


def check_threshold(model: LoadedModel, value: float) -> float:
    """A request's threshold, or a 422 that says the valid range for this model's score."""
    if value == -math.inf:
        return value  # -inf: never unknown, whatever the score
    score = score_of(model)
    low, high = _RANGES.get(score, (-math.inf, math.inf))
    if not math.isfinite(value) or not low <= value <= high:
        span = f"between {low:g} and {high:g}" if score in _RANGES else "a finite number"
        raise ServiceError(
            422,
            "invalid_unknown_threshold",
            f"unknown_threshold={value!r} is out of range for {model.name} (its score is {score})",
            f"send {span} (or -inf: never unknown); the manifest's value is {default_threshold(model)}",
        )
    return value


class UnknownBatcher(BatcherView):
    """A model's batcher whose results gain the ``unknown`` column (see the module docstring)."""

    def __init__(self, inner: WindowBatcher, threshold: float, falls: FallRule | None = None) -> None:
        super().__init__(inner)
        self.threshold = threshold
        self.falls = falls  # the model's fall rule: windows showing the fall pattern stay

    async def submit(self, windows: np.ndarray) -> BatchResult:
        r = await self.inner.submit(windows)
        if r.scores is None:
            raise RuntimeError("this model's batcher gives no open-set scores")
        unknown = r.scores < self.threshold
        if self.falls is not None:  # a fall is never hidden as unknown
            unknown &= ~self.falls.shows_fall(r.probs)
        return dataclasses.replace(r, probs=with_unknown_column(r.probs, unknown))


def with_unknown(model: LoadedModel, threshold: float | None) -> LoadedModel:
    """The model with ``unknown`` (``threshold``: the request's, else the manifest's; None at
    both: the model itself, which never says unknown)."""
    t = default_threshold(model) if threshold is None else check_threshold(model, threshold)
    if t is None and not model.manifest.labels:
        t = math.inf  # no labels (an empty action set): everything is unknown
    if t is None:
        return model
    m = model.manifest
    manifest = m.model_copy(update={"labels": [*m.labels, UNKNOWN]})
    batcher = UnknownBatcher(model.batcher, t, rule_for(m))
    return dataclasses.replace(model, manifest=manifest, batcher=batcher)
