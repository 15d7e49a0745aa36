"""An action set next to a base model (``model=set:NAME,BASE``): the actions a user taught on top of
a shipped classifier's vocabulary, one label per window.

Each window is cut for both models' inputs at the same end time (`LoadedModel.inputs`: the base's,
then the embedding's, stacked on the channel axis) and sent to both at once. Per window, in order:

1. the base shows a fall (its fall classes' probability at its fall rule's threshold): the base's
   answer, so a taught action never hides a fall;
2. the model that goes first (``SKELACT_COMBINED_FIRST``: ``set`` or ``base``) accepts the window:
   its answer. The set accepts a window whose open-set score passes its threshold (the request's
   ``unknown_threshold``, else the embedding's manifest value), the base one whose own open-set
   score passes its manifest threshold (a base without one accepts every window);
3. the other accepts it: its answer;
4. otherwise ``unknown``.

Labels: the base's, then the set's that the base lacks (a taught label named like a base label
shares its column), then ``unknown``. The base's window clock, fall rule and label groups hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np

from service.action_sets import SET_PREFIX
from service.batching import BatchResult, WindowBatcher
from service.core.errors import ServiceError
from service.falls import rule_for
from service.open_set import check_threshold, default_threshold
from service.registry import LoadedModel
from skeleton.prototypes import UNKNOWN

SEPARATOR = ","


def split_name(name: str) -> tuple[str, str] | None:
    """``set:NAME,BASE`` (either order) -> (set name, base name); None for a single model's name."""
    if SEPARATOR not in name:
        return None
    parts = [p.strip() for p in name.split(SEPARATOR)]
    sets = [p for p in parts if p.startswith(SET_PREFIX)]
    bases = [p for p in parts if not p.startswith(SET_PREFIX)]
    if len(parts) != 2 or len(sets) != 1 or not bases[0]:
        raise ServiceError(
            422,
            "invalid_model",
            f"model={name!r}: a combined model is one action set and one base model",
            f"send model={SET_PREFIX}NAME,BASE (e.g. {SET_PREFIX}gym,upfall-stgcnpp-lite; GET /models)",
        )
    return sets[0].removeprefix(SET_PREFIX), bases[0]


def _columns(labels: list[str], names: list[str]) -> np.ndarray:
    return np.array([names.index(x) for x in labels], np.int64)


class CombinedBatcher:
    """Both models' batchers behind one: the windows split by channel, the answers merged (module
    docstring). Producers and lifetimes belong to the two models."""

    def __init__(
        self, base: LoadedModel, taught: LoadedModel, labels: list[str], set_threshold: float, set_first: bool
    ) -> None:
        self.base, self.taught = base.batcher, taught.batcher
        self.split = base.manifest.input.channels
        self.base_cols = _columns(base.labels, labels)
        self.set_cols = _columns(taught.labels, labels)
        self.unknown_col = labels.index(UNKNOWN)
        self.set_threshold = set_threshold
        self.set_first = set_first
        self.base_threshold = default_threshold(base)
        self.falls = rule_for(base.manifest)
        self.width = len(labels)

    async def submit(self, windows: np.ndarray) -> BatchResult:
        c = self.split
        rb, rs = await asyncio.gather(
            self.base.submit(np.ascontiguousarray(windows[:, :c])),
            self.taught.submit(np.ascontiguousarray(windows[:, c:])),
        )
        n = len(windows)
        fall = self.falls.shows_fall(rb.probs) if self.falls is not None else np.zeros(n, bool)
        if rs.scores is None:
            raise RuntimeError("an action set's batcher gives no open-set scores")
        set_known = rs.scores >= self.set_threshold
        base_known = np.ones(n, bool)
        if self.base_threshold is not None and rb.scores is not None:
            base_known = rb.scores >= self.base_threshold
        if self.set_first:
            taught = ~fall & set_known
            from_base = fall | (~taught & base_known)
        else:
            from_base = fall | base_known
            taught = ~from_base & set_known
        probs = np.zeros((n, self.width), np.float32)
        probs[np.ix_(np.flatnonzero(from_base), self.base_cols)] = rb.probs[from_base]
        probs[np.ix_(np.flatnonzero(taught), self.set_cols)] = rs.probs[taught]
        probs[~(from_base | taught), self.unknown_col] = 1.0
        return BatchResult(
            probs, rb.batch_size, rb.batch_id, rb.infer_ms + rs.infer_ms, max(rb.wait_ms, rs.wait_ms)
        )

    def add_producer(self) -> None:
        self.base.add_producer()
        self.taught.add_producer()

    def remove_producer(self) -> None:
        self.base.remove_producer()
        self.taught.remove_producer()

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        with self.base.producing(), self.taught.producing():
            yield

    def start(self) -> None:
        """Both batchers belong to their models, started with them."""

    async def close(self) -> None:
        """Both batchers belong to their models: nothing to close here."""


def combine(
    taught: LoadedModel, base: LoadedModel, threshold: float | None, set_first: bool = True
) -> LoadedModel:
    """The set ``taught`` next to the classifier ``base`` as one model, ``set:NAME,BASE`` (module
    docstring); ``threshold``: the set's (None: the embedding's manifest value)."""
    name = f"{taught.name}{SEPARATOR}{base.name}"
    b, e = base.manifest.input, taught.manifest.input
    if b.layout != e.layout or b.window.length != e.window.length:
        raise ServiceError(
            422,
            "models_not_combinable",
            f"{base.name} reads {b.window.length}-frame {b.layout} windows, the set's embedding "
            f"{e.window.length}-frame {e.layout} ones",
            "combine the set with a base model of the same layout and window length (GET /models)",
        )
    t = default_threshold(taught) if threshold is None else check_threshold(taught, threshold)
    labels = [*base.labels, *(x for x in taught.labels if x not in base.labels), UNKNOWN]
    manifest = base.manifest.model_copy(update={"name": name, "labels": labels, "open_set": None})
    batcher: WindowBatcher = CombinedBatcher(base, taught, labels, -np.inf if t is None else t, set_first)
    return dataclasses.replace(base, name=name, manifest=manifest, batcher=batcher, inputs=(b, e))
