"""The "unknown" rule and few-shot prototypes, numpy only (skeleton.open_set, skeleton.prototypes), and the
manifest fields they read (kind, embedding, open_set), which old manifests may lack."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skeleton.manifest import EmbeddingSpec, ModelManifest, OpenSetSpec
from skeleton.open_set import clip_score, is_unknown, open_set_score, with_unknown_column
from skeleton.paths import REPO_ROOT
from skeleton.prototypes import UNKNOWN, PrototypeSet, leave_one_out, pool, spread


def test_open_set_scores() -> None:
    """One rule for every model: unknown when the named score is below the threshold; a clip is
    unknown when most of its windows are (the median)."""
    logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert open_set_score("max_softmax", logits)[1] == pytest.approx(1 / 3)
    assert open_set_score("energy", logits)[1] == pytest.approx(1 + np.log(3))
    assert open_set_score("max_logit", logits).tolist() == [4.0, 1.0]
    assert open_set_score("max_cosine", np.array([[0.2, 0.9]])).tolist() == [0.9]
    spec = OpenSetSpec(score="max_softmax", threshold=0.5)
    assert is_unknown(spec, logits).tolist() == [False, True]
    assert is_unknown(spec, logits, threshold=0.99).tolist() == [True, True]
    assert clip_score(np.array([0.9, 0.1, 0.8, 0.2, 0.7])) == pytest.approx(0.7)
    assert clip_score(np.array([0.9, 0.1, 0.2])) < 0.5  # two of three windows unknown: the clip is
    with pytest.raises(ValueError, match="at least one window"):
        clip_score(np.array([]))
    with pytest.raises(ValueError, match="open-set score"):
        open_set_score("entropy", logits)


def test_unknown_windows_get_the_unknown_column() -> None:
    """Windows below the threshold become [0, ..., 0, 1] over labels + unknown, the others keep
    their probabilities; a clip's mean then says unknown exactly when those windows outweigh."""
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1]], np.float32)
    out = with_unknown_column(probs, np.array([True, False, True]))
    assert out.dtype == probs.dtype
    assert np.allclose(out, [[0, 0, 1], [0.6, 0.4, 0], [0, 0, 1]])
    assert int(out.mean(axis=0).argmax()) == 2
    assert int(with_unknown_column(probs, np.array([True, False, False])).mean(axis=0).argmax()) == 0
    assert probs[0].tolist() == pytest.approx([0.7, 0.3])  # the input is not changed


def test_relative_cosine_asks_each_label_for_what_its_examples_showed() -> None:
    """An action set's window score: the cosine to the nearest label over that label's spread (how
    closely its example's windows agree), so a varied action is not held to a steady one's bar."""
    steady = np.tile([1.0, 0.0, 0.0], (4, 1))
    varied = np.array([[0.0, 1.0, 0.3], [0.0, 1.0, -0.3], [0.0, 1.0, 0.9], [0.0, 1.0, -0.9]])
    assert spread(steady, pool(steady)) == pytest.approx(1.0)
    s_varied = spread(varied, pool(varied))
    assert 0.5 < s_varied < 0.9
    protos = PrototypeSet.from_examples(
        {"steady": pool(steady)[None], "varied": pool(varied)[None]},
        {"steady": [1.0], "varied": [s_varied, s_varied]},
    )
    queries = np.array([[0.8, 0.0, 0.6], [0.0, 0.8, 0.6]])  # cosine 0.8 to one label each
    sims = protos.similarities(queries)
    assert np.allclose(sims.max(axis=1), 0.8)
    assert protos.relative_scores(sims) == pytest.approx([0.8, 0.8 / s_varied])
    plain = PrototypeSet.from_examples({"steady": pool(steady)[None]})  # no spreads: the plain cosine
    assert plain.relative_scores(plain.similarities(queries[:1])) == pytest.approx([0.8])


def test_prototypes_classify_reject_and_follow_their_examples() -> None:
    """Nearest prototype by cosine, unknown below the threshold; a prototype is the normalised mean
    of its examples, so removing an example moves it."""
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)
    examples = {"wave": axes[0] + 0.1 * rng.normal(size=(3, 8)),
                "clap": axes[1] + 0.1 * rng.normal(size=(2, 8))}
    protos = PrototypeSet.from_examples(examples)
    assert protos.labels == ("wave", "clap") and np.allclose(np.linalg.norm(protos.vectors, axis=1), 1)
    queries = np.stack([axes[0] * 3, axes[1] + 0.05, axes[5]])  # wave, clap, something else
    p = protos.predict(queries, threshold=0.5, logit_scale=16.0)
    assert p.labels == ["wave", "clap", UNKNOWN] and p.known.tolist() == [True, True, False]
    assert p.confidence[0] > 0.9 and abs(p.similarity[2]) < 0.5
    assert protos.predict(queries).labels[2] in ("wave", "clap")  # no threshold: never unknown
    fewer = PrototypeSet.from_examples({**examples, "wave": examples["wave"][:1]})
    assert not np.allclose(fewer.vectors[0], protos.vectors[0])
    window_vectors = rng.normal(size=(5, 8))
    v = pool(window_vectors)
    assert v.shape == (8,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no examples"):
        PrototypeSet.from_examples({"wave": np.zeros((0, 8))})


def test_leave_one_out_judges_each_example_by_the_others() -> None:
    """Two tight labels, a mislabelled example, two one-example labels alike and one far from the
    rest: right, confused, overlaps, distinct; a higher bar makes examples unknown."""
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)

    def near(axis: int, n: int = 1) -> list[np.ndarray]:
        return [axes[axis] + 0.05 * rng.standard_normal(8).astype(np.float32) for _ in range(n)]

    labels = ["a"] * 3 + ["b"] * 3 + ["a", "c", "d", "e"]
    vectors = np.stack([*near(0, 3), *near(1, 3), *near(1), *near(2), *near(2), *near(3)])
    checks = leave_one_out(labels, vectors, [0.9] * len(labels), threshold=0.925)
    assert [c.outcome for c in checks[:6]] == ["right"] * 6 and [c.nearest for c in checks[:6]] == labels[:6]
    assert (checks[6].outcome, checks[6].nearest) == ("confused", "b")  # labelled a, looks like b
    assert [(c.outcome, c.nearest) for c in checks[7:9]] == [("overlaps", "d"), ("overlaps", "c")]
    assert checks[9].outcome == "distinct" and checks[9].score is not None and checks[9].score < 0.925
    # each example scored exactly as the set without it would score it
    spreads = np.linspace(0.5, 1.0, len(labels))
    for i, check in enumerate(leave_one_out(labels, vectors, spreads.tolist(), threshold=0.925)):
        rest = [j for j in range(len(labels)) if j != i]
        grouped: dict[str, list[np.ndarray]] = {}
        for j in rest:
            grouped.setdefault(labels[j], []).append(vectors[j])
        without = PrototypeSet.from_examples(
            grouped, {k: [float(spreads[j]) for j in rest if labels[j] == k] for k in grouped}
        )
        sims = without.similarities(vectors[i])
        assert check.nearest == without.labels[int(sims.argmax())]
        assert check.score == pytest.approx(float(without.relative_scores(sims)[0]), abs=1e-5)
    strict = leave_one_out(labels, vectors, [0.9] * len(labels), threshold=2.0)
    assert [c.outcome for c in strict] == ["unknown"] * 7 + ["distinct"] * 3
    assert leave_one_out(["x"], vectors[:1], [1.0], 0.9)[0].outcome == "distinct"  # nothing to compare


def test_manifests_stay_backwards_compatible() -> None:
    """A shipped manifest without kind / embedding / open_set still loads as a classifier that never
    says unknown; the new fields round-trip."""
    shipped = sorted((REPO_ROOT / "model_zoo").glob("*/manifest.json"))
    assert len(shipped) >= 2
    for path in shipped:
        raw = json.loads(path.read_text())
        for key in ("kind", "embedding", "open_set"):
            raw.pop(key, None)
        old = ModelManifest.model_validate(raw)
        assert old.kind == "classifier" and old.open_set is None and old.embedding is None
        new = old.model_copy(update={"kind": "embedding", "embedding": EmbeddingSpec(dim=64),
                                     "open_set": OpenSetSpec(score="max_cosine", threshold=0.8)})
        assert ModelManifest.model_validate_json(new.model_dump_json()) == new
