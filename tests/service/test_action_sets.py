"""Action sets and ``unknown`` without HTTP: the shipped embedding on ONNX Runtime, real UTD-MHAD-shaped
windows from the shipped preprocessing, the versioned store in a temp folder (two `ActionSets` on one
folder stand for two replicas)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.action_sets import ActionSets, Example, decode_vector, encode_vector
from service.core.config import Settings
from service.core.errors import ServiceError
from service.metrics import Metrics
from service.open_set import UNKNOWN, with_unknown
from service.registry import ModelRegistry
from skeleton.prototypes import PrototypeSet, normalize
from tests.service_helpers import embedding_dir


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    emb = embedding_dir()
    reg = ModelRegistry(Settings(models_dir=emb.parent, models=[emb.name], warmup=False), Metrics())
    reg.load_all()
    assert not reg.failed and emb.name in reg.models, reg.failed
    return reg


def _vector(seed: int, dim: int) -> np.ndarray:
    return normalize(np.random.default_rng(seed).normal(size=dim))


def _example(seed: int, dim: int) -> Example:
    return Example(_vector(seed, dim), 3, 2.5, {"kind": "skeleton"})


def test_sets_are_versioned_documents_seen_by_every_replica(registry: ModelRegistry, tmp_path: Path) -> None:
    a, b = ActionSets(tmp_path, registry), ActionSets(tmp_path, registry)  # two replicas, one folder
    dim = next(iter(registry.models.values())).manifest.embedding.dim  # type: ignore[union-attr]
    assert a.create("gym", None).version == 1
    with pytest.raises(ServiceError) as exc:
        b.create("gym", None)
    assert exc.value.status == 409
    saved, item = b.add_example("gym", "squat", _example(0, dim))
    assert saved.version == 2 and a.read("gym").doc["labels"]["squat"][0]["id"] == item["id"]  # type: ignore[index]
    a.add_example("gym", "lunge", _example(1, dim))
    model = b.model("gym")
    assert model.name == "set:gym" and model.labels == ["squat", "lunge"]
    assert np.allclose(decode_vector(encode_vector(_vector(0, dim))), _vector(0, dim))
    a.rename_label("gym", "lunge", "split squat")
    assert b.model("gym").labels == ["squat", "split squat"]  # the new version rebuilds the model
    with pytest.raises(ServiceError) as exc:
        a.delete("gym", if_version=2)
    assert exc.value.status == 412
    b.rename("gym", "gym2")
    with pytest.raises(ServiceError) as exc:
        a.read("gym")
    assert exc.value.status == 404 and a.names() == ["gym2"]
    a.create("gym", None)  # a deleted name can be used again, empty
    assert a.read("gym").doc["labels"] == {}  # type: ignore[index]
    for bad in ("unknown", "a/b", " x"):
        with pytest.raises(ServiceError) as exc:
            a.add_example("gym2", bad, _example(2, dim))
        assert exc.value.code == "invalid_label"


def test_a_set_classifies_by_its_own_prototypes_and_says_unknown(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    sets = ActionSets(tmp_path, registry)
    emb = next(iter(registry.models.values()))
    dim = emb.manifest.embedding.dim  # type: ignore[union-attr]
    x = np.random.default_rng(5).normal(size=(4, *emb.input_shape(1)[1:])).astype(np.float32)
    vectors = emb.runtime.predict(x)  # real window embeddings
    sets.create("mine", None)
    sets.add_example("mine", "a", Example(vectors[0], 1, 2.0, {}))
    sets.add_example("mine", "b", Example(vectors[1], 1, 2.0, {}))
    sets.create("other", None)
    sets.add_example("other", "c", Example(_vector(9, dim), 1, 2.0, {}))

    async def classify_all(
        calls: list[tuple[str, float | None]],
    ) -> list[tuple[list[str], np.ndarray]]:
        out = []
        try:
            for name, threshold in calls:  # one event loop: the embedding's batcher is bound to it
                model = with_unknown(sets.model(name), threshold)
                out.append((model.labels, (await model.batcher.submit(x)).probs))
        finally:
            await registry.models[emb.name].batcher.close()
        return out

    sets.create("empty", None)
    protos = PrototypeSet.from_examples({"a": vectors[:1], "b": vectors[1:2]})
    between = (protos.similarities(vectors)[2:].max() + 1.0) / 2  # windows 0, 1 are the prototypes
    calls = [("mine", -1.0), ("mine", float(between)), ("other", None), ("empty", None)]
    results = asyncio.run(classify_all(calls))
    labels, probs = results[0]  # -1: no window is unknown
    assert labels == ["a", "b", UNKNOWN] and probs.shape == (4, 3)
    assert np.array_equal(probs[:, :2].argmax(1), protos.similarities(vectors).argmax(1))
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1 and (probs[:, 2] == 0).all()
    labels, probs = results[1]  # the threshold between: the other two windows are unknown
    assert list(probs.argmax(1)) == [0, 1, 2, 2]
    labels, _ = results[2]
    assert labels == ["c", UNKNOWN]  # nothing of 'mine'
    labels, probs = results[3]
    assert labels == [UNKNOWN] and (probs == 1).all()
    with pytest.raises(ServiceError) as exc:
        with_unknown(sets.model("mine"), 10.5)  # a set's relative cosine lies in [-10, 10]
    assert exc.value.code == "invalid_unknown_threshold"


def test_examples_from_another_embedding_export_are_refused_not_misread(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """After an embedding upgrade a set's stored vectors live in another space: 409 with how to fix,
    never silent nonsense; examples saved before provenance was kept still load."""
    sets = ActionSets(tmp_path, registry)
    dim = next(iter(registry.models.values())).manifest.embedding.dim  # type: ignore[union-attr]
    sets.create("gym", None)
    _, item = sets.add_example("gym", "squat", _example(0, dim))
    emb = next(iter(registry.models.values()))
    assert item["embedding_sha256"] == emb.manifest.onnx.sha256
    assert sets.model("gym").labels == ["squat"]

    doc = dict(sets.read("gym").doc or {})
    doc["labels"] = {"squat": [{**item, "embedding_sha256": "0" * 64}]}  # made by an older export
    sets.store.write("gym", doc, if_version=sets.read("gym").version)
    with pytest.raises(ServiceError) as exc:
        sets.model("gym")
    assert exc.value.status == 409 and exc.value.code == "stale_examples" and "re-enrol" in exc.value.hint

    legacy = {k: v for k, v in item.items() if k != "embedding_sha256"}
    doc["labels"] = {"squat": [legacy]}
    sets.store.write("gym", doc, if_version=sets.read("gym").version)
    assert sets.model("gym").labels == ["squat"]


def test_example_vectors_are_files_of_their_own_and_go_with_their_examples(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """A set's document names its examples; each vector is ``_vectors/<id>.f32``, written before the
    document names it and deleted once no document does, so a change rewrites a few hundred bytes per
    example, not every vector (80640-d with the shipped ensemble). Inline vectors of older sets load."""
    from service.action_sets import VECTORS_DIR

    a, b = ActionSets(tmp_path, registry), ActionSets(tmp_path, registry)  # two replicas, one folder
    dim = next(iter(registry.models.values())).manifest.embedding.dim  # type: ignore[union-attr]
    vectors = {i: _vector(i, dim) for i in range(4)}
    a.create("gym", None)
    ids = [a.add_example("gym", label, Example(vectors[i], 3, 2.5, {}, 0.8))[1]["id"]
           for i, label in enumerate(["squat", "squat", "lunge"])]
    files = sorted(p.name for p in (tmp_path / VECTORS_DIR).iterdir())
    assert files == sorted(f"{i}.f32" for i in ids)
    newest = max((tmp_path / "gym").glob("*.json"), key=lambda p: int(p.stem))
    assert newest.stat().st_size < 4000 and '"vector"' not in newest.read_text()
    assert a.names() == ["gym"]  # the vectors' folder is not a set

    def prototypes(sets: ActionSets) -> dict[str, np.ndarray]:
        protos = sets.model("gym").batcher.prototypes  # type: ignore[attr-defined]
        return dict(zip(protos.labels, protos.vectors, strict=True))

    want = PrototypeSet.from_examples({"squat": [vectors[0], vectors[1]], "lunge": [vectors[2]]})
    got = prototypes(b)
    assert np.allclose(got["squat"], want.vectors[0], atol=1e-6) and np.allclose(got["lunge"], vectors[2])

    a.delete_example("gym", "squat", ids[0])  # the other replica rebuilds from the files left
    assert not (tmp_path / VECTORS_DIR / f"{ids[0]}.f32").exists()
    assert np.allclose(prototypes(b)["squat"], vectors[1], atol=1e-6)
    with pytest.raises(ServiceError):
        a.add_example("nope", "squat", Example(vectors[3], 3, 2.5, {}))  # 404: no file left behind
    assert len(list((tmp_path / VECTORS_DIR).iterdir())) == 2

    # an example stored inline (before vector files) still loads, beside one in a file
    doc = dict(a.read("gym").doc or {})
    inline = {"id": "f" * 32, "vector": encode_vector(vectors[3]), "windows": 3, "seconds": 2.5,
              "spread": 1.0, "source": {}, "added": "2026-12-01T00:00:00+00:00"}
    doc["labels"] = {**doc["labels"], "lunge": [*doc["labels"]["lunge"], inline]}
    a.store.write("gym", doc, if_version=a.read("gym").version)
    lunge = PrototypeSet.from_examples({"lunge": [vectors[2], vectors[3]]}).vectors[0]
    assert np.allclose(prototypes(b)["lunge"], lunge, atol=1e-6)

    a.rename("gym", "gym2")  # the examples move with the document, their files stay
    assert b.model("gym2").labels == ["squat", "lunge"] and len(list((tmp_path / VECTORS_DIR).iterdir())) == 2
    a.delete_label("gym2", "squat")
    assert not (tmp_path / VECTORS_DIR / f"{ids[1]}.f32").exists()
    a.delete("gym2")
    assert list((tmp_path / VECTORS_DIR).iterdir()) == []


def test_vector_files_no_set_names_are_swept_once_old(registry: ModelRegistry, tmp_path: Path) -> None:
    """A process stopped between writing a vector and committing its document leaves a file no set
    names: swept once it is older than an hour; files a set names, and new ones, stay."""
    import os
    import time

    from service.action_sets import ORPHAN_AGE_S, VECTORS_DIR

    sets = ActionSets(tmp_path, registry)
    assert sets.sweep_vectors() == 0  # no folder yet
    dim = next(iter(registry.models.values())).manifest.embedding.dim  # type: ignore[union-attr]
    sets.create("gym", None)
    named = sets.add_example("gym", "squat", _example(0, dim))[1]["id"]
    folder = tmp_path / VECTORS_DIR
    orphan, fresh, temp = folder / f"{'a' * 32}.f32", folder / f"{'b' * 32}.f32", folder / ".tmp-x.f32.123"
    for path in (orphan, fresh, temp):
        path.write_bytes(b"\0" * 16)
    old = time.time() - ORPHAN_AGE_S - 60
    for path in (orphan, temp, folder / f"{named}.f32"):
        os.utime(path, (old, old))
    assert sets.sweep_vectors() == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{named}.f32", fresh.name])
    assert sets.model("gym").labels == ["squat"]


def test_a_set_next_to_a_base_model_answers_in_order(tmp_path: Path) -> None:
    """`service.combined` on the shipped embedding and a tiny real ONNX base (kinect20, 32 frames, no
    open-set rule): one vocabulary (the base's labels, the set's new ones, ``unknown``), the set's
    answer where it accepts a window (set first), the base's where it does not or goes first; a base
    of another layout is refused with how to fix it."""
    from service.combined import combine, split_name
    from tests.service_helpers import write_linear_model

    emb = embedding_dir()
    zoo = tmp_path / "zoo"
    write_linear_model(zoo / "base", ["walk", "a"], layout="kinect20", joints=20, stride=4)
    write_linear_model(zoo / "wide", ["walk"])  # mediapipe33
    (zoo / "embeddings").mkdir()
    (zoo / "embeddings" / emb.name).symlink_to(emb)
    reg = ModelRegistry(Settings(models_dir=zoo, warmup=False), Metrics())
    reg.load_all()
    assert not reg.failed, reg.failed
    sets = ActionSets(tmp_path / "sets", reg)
    model = reg.models[emb.name]
    x = np.random.default_rng(7).normal(size=(4, *model.input_shape(1)[1:])).astype(np.float32)
    vectors = model.runtime.predict(x)
    sets.create("mine", None)
    sets.add_example("mine", "a", Example(vectors[0], 1, 2.0, {}))  # named like a base label
    sets.add_example("mine", "z", Example(vectors[1], 1, 2.0, {}))
    base = reg.models["base"]
    stacked = np.concatenate([x, x], axis=1)  # the base's window, then the embedding's

    async def answers(calls: list[tuple[float | None, bool]]) -> list[tuple[list[str], np.ndarray]]:
        out = []
        try:
            for threshold, set_first in calls:
                both = combine(sets.model("mine"), base, threshold, set_first)
                assert both.name == "set:mine,base"
                out.append((both.labels, (await both.batcher.submit(stacked)).probs))
            out.append((base.labels, (await base.batcher.submit(x)).probs))
        finally:
            for m in reg.models.values():
                await m.batcher.close()
        return out

    (labels, first), (_, high), (_, base_first), (_, alone) = asyncio.run(
        answers([(None, True), (10.0, True), (None, False)])
    )
    assert labels == ["walk", "a", "z", UNKNOWN]
    assert list(first.argmax(1)[:2]) == [1, 2]  # windows 0, 1 are the set's examples: its labels
    assert np.allclose(first.sum(1), 1.0, atol=1e-5)
    assert np.allclose(high[:, :2], alone, atol=1e-6) and (high[:, 2:] == 0).all()  # the set accepts none
    assert np.allclose(base_first, high, atol=1e-6)  # a base without a rule accepts every window
    assert split_name("base,set:mine") == ("mine", "base") and split_name("base") is None
    for bad in ("set:a,set:b", "a,b", "set:a,b,c", "set:a,"):
        with pytest.raises(ServiceError) as exc:
            split_name(bad)
        assert exc.value.code == "invalid_model", bad
    with pytest.raises(ServiceError) as exc:
        combine(sets.model("mine"), reg.models["wide"], None)
    assert exc.value.code == "models_not_combinable" and "layout" in exc.value.hint
