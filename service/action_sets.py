"""Custom action sets: labels taught by a few examples, each set usable as a model (``set:NAME``).

A set is one versioned JSON document in ``SKELACT_ACTION_SETS_DIR`` (`service.store.VersionedStore`:
every replica that mounts the folder sees it, concurrent writers never overwrite each other):
its embedding model's name and, per label, its examples. An example is the pooled unit vector of
its windows (`skeleton.prototypes.pool`) and their spread around it (`skeleton.prototypes.spread`),
with where it came from. The vector is a file of its own, ``_vectors/<example id>.f32`` (float32,
written once before the document names it, deleted after the document stops naming it), so a
document stays a few hundred bytes per example: every change rewrites the whole document (and the
store keeps its last versions), which with inline vectors of an ensemble embedding (80640-d, 430
kB in base64) made one example added to a 200-example set cost 0.5 s and the folder 6.7 GB.
Examples stored inline before (``vector`` in base64) still load. Nothing of one set is read when
another is used: a set's prototypes are built from its own document and its examples' files only.

Used as a model, a set is the embedding model's windows (its ONNX session and micro-batcher,
shared with every other set on that embedding) followed by `PrototypeBatcher`: cosine to each
label's prototype (the normalised mean of its examples), probabilities softmax(logit_scale x
cosine), and as the open-set score the nearest cosine over that label's mean example spread
(``relative_cosine``, `PrototypeSet.relative_scores`; `service.open_set` makes ``unknown``). A
set without examples is a model too, whose every window is ``unknown`` (a stream can run it while
its first example is enrolled from that stream).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.batching import BatcherView, BatchResult, WindowBatcher
from service.core.errors import ServiceError
from service.registry import LoadedModel, ModelRegistry
from service.store import VersionConflict, Versioned, VersionedStore, check_id, create_new, new_id
from skeleton.open_set import softmax
from skeleton.prototypes import UNKNOWN, ExampleCheck, PrototypeSet, leave_one_out, pool

__all__ = ["SET_PREFIX", "ActionSets", "Example", "PrototypeBatcher", "default_sets_dir"]

SET_PREFIX = "set:"  # model=set:NAME in /recognize and /stream
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL = re.compile(r"[^\x00-\x1f/]{1,64}")
_RETRIES = 8  # read-modify-write attempts when other writers keep winning
VECTORS_DIR = "_vectors"  # beside the sets' folders ('_' cannot start a set's name)
ORPHAN_AGE_S = 3600.0  # a vector file no set names, this old, was left by a crash between write and commit


def default_sets_dir() -> Path:
    """Where sets live without SKELACT_ACTION_SETS_DIR: the user's cache, so a restart keeps them."""
    return Path(os.environ.get("SKELACT_CACHE_DIR") or Path.home() / ".cache" / "skelact") / "action-sets"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def encode_vector(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Example:
    """A new example: its pooled vector and what the store keeps about it."""

    vector: np.ndarray
    windows: int
    seconds: float
    source: dict[str, Any]
    spread: float = 1.0  # skeleton.prototypes.spread of its windows


def check_vectors_match(name: str, doc: dict[str, Any], sha256: str) -> None:
    """409 when an example's vector came from another export of the embedding (an upgrade): its
    cosines to today's windows would be meaningless. Examples saved before provenance was kept pass."""
    stale = sorted(
        label
        for label, items in doc["labels"].items()
        if any(e.get("embedding_sha256", sha256) != sha256 for e in items)
    )
    if stale:
        raise ServiceError(
            409,
            "stale_examples",
            f"action set {name!r} has examples made by another version of embedding "
            f"{doc['embedding']!r} (labels {stale})",
            "re-enrol those labels' examples (DELETE them and add them again), or serve the embedding "
            "version they were made with",
        )


def not_found(what: str, hint: str) -> ServiceError:
    return ServiceError(404, "not_found", f"{what} does not exist", hint)


def check_set_name(name: str) -> str:
    if _SET_NAME.fullmatch(name) is None:
        raise ServiceError(
            422,
            "invalid_name",
            f"action set name {name!r} is not allowed",
            "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return name


def check_label(label: str) -> str:
    if _LABEL.fullmatch(label) is None or label.strip() != label or label == UNKNOWN:
        raise ServiceError(
            422,
            "invalid_label",
            f"label {label!r} is not allowed",
            f"use 1-64 characters without '/', control characters or outer spaces; {UNKNOWN!r} is reserved",
        )
    return label


class PrototypeBatcher(BatcherView):
    """An action set's classifier: the embedding's batcher, then the nearest prototypes."""

    def __init__(self, embedding: WindowBatcher, prototypes: PrototypeSet | None, logit_scale: float) -> None:
        super().__init__(embedding)
        self.prototypes = prototypes
        self.logit_scale = logit_scale

    async def submit(self, windows: np.ndarray) -> BatchResult:
        if self.prototypes is None:  # a set without examples yet: every window is unknown
            n = len(windows)
            return BatchResult(np.zeros((n, 0), np.float32), n, 0, 0.0, 0.0, np.full(n, -np.inf, np.float32))
        r = await self.inner.submit(windows)
        sims = self.prototypes.similarities(r.probs)
        probs = softmax(sims, self.logit_scale).astype(np.float32)
        scores = self.prototypes.relative_scores(sims).astype(np.float32)
        return dataclasses.replace(r, probs=probs, scores=scores)


class ActionSets:
    """The sets in one folder; every change is a compare-and-swap of the set's document."""

    def __init__(self, root: Path, registry: ModelRegistry) -> None:
        self.root = root
        self.registry = registry
        self._store: VersionedStore | None = None
        self._models: dict[str, tuple[int, LoadedModel]] = {}  # name -> (version, model)
        # (set, label) -> (its examples' ids, their pooled vector): a change to one label reads only its files
        self._pooled: dict[tuple[str, str], tuple[tuple[str, ...], np.ndarray]] = {}
        self._swept = float("-inf")  # time.monotonic() of the last sweep_vectors

    @property
    def store(self) -> VersionedStore:
        if self._store is None:  # made on first use: a read-only image without sets still starts
            self._store = VersionedStore(self.root)
        return self._store

    # ---------------------------------------------------------------- reading

    def names(self) -> list[str]:
        return self.store.names()

    def documents(self) -> dict[str, Versioned]:
        """Every set's newest version, each read once."""
        return self.store.documents()

    def read(self, name: str) -> Versioned:
        """The set's document and version; 404 when there is none."""
        current = self.store.read(check_set_name(name))
        if current.doc is None:
            raise not_found(
                f"action set {name!r}", "GET /action-sets lists them; POST /action-sets creates one"
            )
        return current

    def embedding_model(self, name: str | None) -> LoadedModel:
        """An embedding model from the registry (None: the first one loaded)."""
        found = sorted(n for n, m in self.registry.models.items() if m.manifest.kind == "embedding")
        if name is None:
            if not found:
                raise ServiceError(
                    409,
                    "no_embedding_model",
                    "no embedding model is loaded, so examples cannot be turned into vectors",
                    "add an embedding model folder (manifest kind 'embedding') to SKELACT_MODELS_DIR",
                )
            name = found[0]
        model = self.registry.get(name)
        if model.manifest.kind != "embedding":
            raise ServiceError(
                422, "not_an_embedding", f"model {name!r} is a classifier", f"use one of {found}"
            )
        return model

    def model(self, name: str) -> LoadedModel:
        """The set as a model (``set:NAME``): the embedding and this set's prototypes."""
        current = self.read(name)
        cached = self._models.get(name)
        if cached is not None and cached[0] == current.version:
            return cached[1]
        doc = current.doc or {}
        emb = self.embedding_model(doc["embedding"])
        check_vectors_match(name, doc, emb.manifest.onnx.sha256)
        examples = self._examples(name, doc)
        spreads = {  # examples stored before spreads were kept count as 1 (the plain cosine)
            label: [float(e.get("spread", 1.0)) for e in items]
            for label, items in doc["labels"].items()
            if items
        }
        protos = PrototypeSet.from_examples(examples, spreads) if examples else None  # empty: all unknown
        spec = emb.manifest.embedding
        scale = spec.logit_scale if spec is not None else 16.0
        model_name = SET_PREFIX + name
        manifest = emb.manifest.model_copy(
            update={"name": model_name, "labels": list(protos.labels if protos else ()), "label_groups": {}}
        )
        model = dataclasses.replace(
            emb, name=model_name, manifest=manifest, batcher=PrototypeBatcher(emb.batcher, protos, scale)
        )
        self._models[name] = (current.version, model)
        return model

    def check(
        self, name: str, threshold: float
    ) -> tuple[Versioned, list[tuple[dict[str, Any], ExampleCheck]]]:
        """Each example of the set judged by the others (`skeleton.prototypes.leave_one_out`) at
        ``threshold``: which examples the rest of the set confuses, misses, or would take for
        another label. The newest version, and per example its stored item and its check."""
        current = self.read(name)
        doc = current.doc or {}
        check_vectors_match(name, doc, self.embedding_model(doc["embedding"]).manifest.onnx.sha256)
        items = [(label, e) for label, es in doc["labels"].items() for e in es]
        if not items:
            return current, []
        vectors = np.stack([self._vector(e) for _, e in items])
        spreads = [float(e.get("spread", 1.0)) for _, e in items]
        checks = leave_one_out([label for label, _ in items], vectors, spreads, threshold)
        return current, [(e, c) for (_, e), c in zip(items, checks, strict=True)]

    def _vector_path(self, example_id: str) -> Path:
        if not check_id(example_id):
            raise ValueError(f"not an example id: {example_id!r}")
        return self.root / VECTORS_DIR / f"{example_id}.f32"

    def _examples(self, name: str, doc: dict[str, Any], attempts: int = 3) -> dict[str, np.ndarray]:
        """Label -> its pooled example vector (one row). A file missing means another replica
        deleted the example after this document was read: read the newest document again."""
        try:
            found = {}
            for label, items in doc["labels"].items():
                if not items:
                    continue
                ids = tuple(e["id"] for e in items)
                cached = self._pooled.get((name, label))
                if cached is None or cached[0] != ids:
                    cached = (ids, pool(np.stack([self._vector(e) for e in items])))
                    self._pooled[name, label] = cached
                found[label] = cached[1][None]
            for key in [k for k in list(self._pooled) if k[0] == name and k[1] not in found]:
                self._pooled.pop(key, None)  # labels deleted or renamed since (requests run in threads)
            return found
        except FileNotFoundError:
            if attempts <= 1:
                raise
            return self._examples(name, self.read(name).doc or {}, attempts - 1)

    def _vector(self, item: dict[str, Any]) -> np.ndarray:
        if "vector" in item:  # stored inline, before vectors had files of their own
            return decode_vector(item["vector"])
        return np.frombuffer(self._vector_path(item["id"]).read_bytes(), "<f4").astype(np.float32)

    def _drop_vectors(self, items: list[dict[str, Any]]) -> None:
        """Delete the files of examples no document names any more."""
        for item in items:
            if "vector" not in item:
                self._vector_path(item["id"]).unlink(missing_ok=True)

    def sweep_vectors(self, max_age_s: float = ORPHAN_AGE_S) -> int:
        """Delete vector files older than ``max_age_s`` that no set's newest document names (a process
        that stopped between writing a vector and committing its document left them); returns how
        many. Any replica may run it: an example being added is named within milliseconds."""
        folder = self.root / VECTORS_DIR
        if not folder.is_dir():
            return 0
        self._swept = time.monotonic()
        named = {
            e["id"]
            for current in self.documents().values()
            for items in (current.doc or {}).get("labels", {}).values()
            for e in items
        }
        cutoff, deleted = time.time() - max_age_s, 0
        for path in folder.iterdir():
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old and path.name.split(".")[0] not in named:
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted

    # ---------------------------------------------------------------- writing

    def _change(
        self, name: str, change: Callable[[dict[str, Any]], None], if_version: int | None = None
    ) -> Versioned:
        """Read, change, write back if nobody wrote in between (else again, or 412 with If-Match)."""
        for _ in range(_RETRIES):
            current = self.read(name)
            if if_version is not None and current.version != if_version:
                raise precondition_failed(name, if_version, current.version)
            doc = dict(current.doc or {})
            doc["labels"] = {k: list(v) for k, v in doc["labels"].items()}
            change(doc)
            doc["updated"] = _now()
            try:
                return self.store.write(name, doc, if_version=current.version)
            except VersionConflict:
                if if_version is not None:
                    raise precondition_failed(name, if_version, self.store.read(name).version) from None
        raise ServiceError(409, "conflict", f"action set {name!r} keeps changing", "retry the request")

    def create(self, name: str, embedding: str | None) -> Versioned:
        emb = self.embedding_model(embedding)
        created = _now()
        doc = {"name": check_set_name(name), "embedding": emb.name, "created": created, "updated": created}
        return self._create_doc(name, {**doc, "labels": {}})

    def _create_doc(self, name: str, doc: dict[str, Any]) -> Versioned:
        """Write a new set (a deleted name may be used again); 409 when it exists."""
        current = self.store.read(name)
        try:
            if current.doc is not None:
                raise VersionConflict(name, current.version, current)
            return self.store.write(name, doc, if_version=current.version)
        except VersionConflict:
            raise ServiceError(
                409,
                "already_exists",
                f"action set {name!r} exists",
                "choose another name, or DELETE it first",
            ) from None

    def rename(self, name: str, new: str, if_version: int | None = None) -> Versioned:
        current = self.read(name)
        if if_version is not None and current.version != if_version:
            raise precondition_failed(name, if_version, current.version)
        created = self._create_doc(
            check_set_name(new), {**(current.doc or {}), "name": new, "updated": _now()}
        )
        self.store.delete(name)
        self._models.pop(name, None)
        return created

    def delete(self, name: str, if_version: int | None = None) -> None:
        current = self.read(name)
        try:
            self.store.delete(name, current.version if if_version is None else if_version)
        except VersionConflict as exc:
            raise precondition_failed(name, if_version or current.version, exc.current.version) from None
        self._models.pop(name, None)
        for key in [k for k in list(self._pooled) if k[0] == name]:
            self._pooled.pop(key, None)
        self._drop_vectors([e for items in (current.doc or {})["labels"].values() for e in items])

    def add_example(self, name: str, label: str, example: Example) -> tuple[Versioned, dict[str, Any]]:
        check_label(label)
        item = {
            "id": new_id(),
            "windows": example.windows,
            "seconds": round(example.seconds, 3),
            "spread": round(example.spread, 4),
            "source": example.source,
            "added": _now(),
        }

        def change(doc: dict[str, Any]) -> None:
            emb = self.embedding_model(doc["embedding"])
            item["embedding_sha256"] = emb.manifest.onnx.sha256  # which export made the vector
            doc["labels"].setdefault(label, []).append(item)

        if time.monotonic() - self._swept > ORPHAN_AGE_S:  # at most hourly, on the path that makes files
            self.sweep_vectors()
        path = self._vector_path(str(item["id"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        create_new(path, np.asarray(example.vector, "<f4").tobytes())  # before any document names it
        try:
            saved = self._change(name, change)
        except BaseException:
            self._drop_vectors([item])
            raise
        return saved, item

    def delete_example(self, name: str, label: str, example_id: str) -> Versioned:
        removed: list[dict[str, Any]] = []

        def change(doc: dict[str, Any]) -> None:
            items = self._label(doc, name, label)
            kept = [e for e in items if e["id"] != example_id]
            if len(kept) == len(items):
                raise not_found(f"example {example_id!r} of {label!r}", f"GET /action-sets/{name} lists them")
            removed[:] = [e for e in items if e["id"] == example_id]
            doc["labels"][label] = kept
            if not kept:
                del doc["labels"][label]

        saved = self._change(name, change)
        self._drop_vectors(removed)
        return saved

    def rename_label(self, name: str, label: str, new: str) -> Versioned:
        check_label(new)

        def change(doc: dict[str, Any]) -> None:
            items = self._label(doc, name, label)
            if new in doc["labels"]:
                raise ServiceError(
                    409, "already_exists", f"label {new!r} exists in {name!r}", "choose another name"
                )
            doc["labels"] = {(new if k == label else k): v for k, v in doc["labels"].items()}
            del items

        return self._change(name, change)

    def delete_label(self, name: str, label: str) -> Versioned:
        removed: list[dict[str, Any]] = []

        def change(doc: dict[str, Any]) -> None:
            removed[:] = self._label(doc, name, label)
            del doc["labels"][label]

        saved = self._change(name, change)
        self._drop_vectors(removed)
        return saved

    @staticmethod
    def _label(doc: dict[str, Any], name: str, label: str) -> list[dict[str, Any]]:
        items = doc["labels"].get(label)
        if items is None:
            raise not_found(f"label {label!r} of action set {name!r}", f"GET /action-sets/{name} lists them")
        return list(items)


def precondition_failed(name: str, expected: int, current: int) -> ServiceError:
    return ServiceError(
        412,
        "precondition_failed",
        f"action set {name!r} is at version {current}, If-Match named {expected}",
        "GET it again and retry with its ETag",
    )
