"""Few-shot enrolment and "unknown" (issue 17) on the real data: the embedding model, its training,
export and manifest, the prototype classifier and the open-set rule, and the protocol's episodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skeleton.manifest import ModelManifest, OpenSetSpec, load_manifest
from skeleton.open_set import LOGIT_SCORES, is_unknown, open_set_score, pool_logits, softmax
from skeleton.prototypes import UNKNOWN, PrototypeSet, pool
from tests.conftest import REPO_ROOT, require_data
from tests.model_helpers import require_cache

ZOO = REPO_ROOT / "model_zoo"
EMBEDDING = ZOO / "embeddings" / "utd-mhad-stgcnpp-lite-embedding"
TINY = {  # a small backbone: a real training run of a few minutes at most on a 2-core CI machine
    "model.kwargs": {"features": ["joint", "bone", "motion"], "base_channels": 16, "num_stages": 3,
                     "inflate_stages": [2], "down_stages": [2]},
    "optim.epochs": 12, "optim.warmup_epochs": 1,
}


@pytest.fixture(scope="module")
def bank():  # type: ignore[no-untyped-def]
    from training import fewshot

    return fewshot.ClipBank.load(require_data(), fewshot.split_config("r0", "embedding"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedding trained like the protocol's split r0 (20 base actions, subjects 1,3,5,7)."""
    from training import fewshot
    from training.train import train

    out = tmp_path_factory.mktemp("tiny-r0")
    train(fewshot.split_config("r0", "embedding", overrides=TINY), out, require_data(), log=lambda _: None,
          plots=False)
    return out / "checkpoint.pt"


def test_protocol_episodes(bank) -> None:  # type: ignore[no-untyped-def]
    """Examples come from training subjects only and queries are every test-subject clip of the unseen
    actions; the same seed gives the same draws (every method sees the same examples)."""
    from training import fewshot

    split = fewshot.splits()
    assert split["21-27"] == list(range(21, 28)) and len(split) >= 6
    assert all(len(split[f"r{s}"]) == 7 for s in fewshot.RANDOM_SPLIT_SEEDS)
    unseen = fewshot.unseen_actions("r0")
    assert not set(unseen) & set(fewshot.base_actions("r0")) and len(fewshot.base_actions("r0")) == 20
    eps = fewshot.draw_episodes(bank, unseen, 5, 4, 0, fewshot.TRAIN_SUBJECTS, fewshot.TEST_SUBJECTS)
    again = fewshot.draw_episodes(bank, unseen, 5, 4, 0, fewshot.TRAIN_SUBJECTS, fewshot.TEST_SUBJECTS)
    for ep, ep2 in zip(eps, again, strict=True):
        assert sorted(ep.support) == unseen
        support = np.concatenate(list(ep.support.values()))
        assert set(bank.subjects[support]) <= {1, 3, 5, 7} and all(len(v) == 5 for v in ep.support.values())
        assert all(set(bank.actions[v]) == {a} for a, v in ep.support.items())
        assert set(bank.subjects[ep.queries]) == {2, 4, 6, 8} and set(bank.actions[ep.queries]) == set(unseen)
        assert len(ep.queries) == int((np.isin(bank.actions, unseen) & (bank.subjects % 2 == 0)).sum())
        assert all(np.array_equal(ep.support[a], ep2.support[a]) for a in ep.support)
    # a clip is the service's windows of it played at 30 fps (32 frames at 15 fps, every 4 frames)
    lengths = np.array([len(w) for w in bank.windows])
    assert lengths.min() >= 1 and lengths.max() > 3 and bank.windows[0].shape[1:] == (3, 32, 20)


def test_trained_embedding_beats_untrained_network(tiny_run: Path, bank) -> None:  # type: ignore[no-untyped-def]
    """Metric learning on 20 actions transfers to 7 unseen arm gestures: the small embedding beats an
    untrained network of the same architecture and readout by a clear margin (measured 78.4 / 85.0 %
    against 55.9 / 65.9 % for 1 / 5 shots, 20 draws)."""
    from training import fewshot
    from training.metric_learning import joints_encoder

    unseen = fewshot.unseen_actions("r0")
    keep = np.isin(bank.actions, unseen)
    cfg = fewshot.split_config("r0", "embedding", overrides=TINY)
    trained = bank.vectors(fewshot.run_encoder(tiny_run), keep)
    untrained = bank.vectors(joints_encoder(fewshot.backbone_of(None, cfg)), keep)
    assert np.allclose(np.linalg.norm(trained[keep], axis=1), 1.0, atol=1e-4)
    for shots, margin in ((1, 0.1), (5, 0.1)):
        eps = fewshot.draw_episodes(bank, unseen, shots, 20, shots, fewshot.TRAIN_SUBJECTS,
                                    fewshot.TEST_SUBJECTS)
        ours, base = fewshot.closed_set(trained, bank, eps), fewshot.closed_set(untrained, bank, eps)
        assert ours["mean"] > base["mean"] + margin, (shots, ours, base)
        assert ours["mean"] > 0.6  # chance is 1/7


def test_embedding_export_parity_and_manifest(tiny_run: Path, tmp_path: Path) -> None:
    """``python -m export onnx`` on an embedding checkpoint: ONNX Runtime matches PyTorch on real
    windows (unit vectors), the manifest says what the service needs and round-trips."""
    import onnxruntime as ort
    import torch

    from export.onnx_export import EMBEDDING_OUTPUT_NAME, export_checkpoint
    from training.checkpoint import load_checkpoint
    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    m = export_checkpoint(tiny_run, tmp_path / "emb", require_data(), REPO_ROOT)
    assert m.kind == "embedding" and m.labels == [] and m.embedding is not None
    assert m.embedding.dim == 128 and len(m.embedding.trained_on) == 20 and m.embedding.metric == "cosine"
    assert m.onnx.output_name == EMBEDDING_OUTPUT_NAME and m.onnx.output_shape == ["batch", 128]
    assert m.metrics["onnx_parity"]["rel_error"] < 1e-4
    again = load_manifest(tmp_path / "emb")
    assert again == m and ModelManifest.model_validate_json(m.model_dump_json()) == m
    clips = load_utd_mhad(require_data(), {2})[::40]
    windows = np.concatenate([utd_windows(c, m.input) for c in clips])
    sess = ort.InferenceSession(str(tmp_path / "emb" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([m.onnx.output_name], {m.onnx.input_name: windows})[0]
    with torch.no_grad():
        ref = load_checkpoint(tiny_run).model(torch.from_numpy(windows)).numpy()
    assert got.shape == (len(windows), 128) and np.abs(got - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_open_set_scores() -> None:
    """One rule for every model: unknown when the named score is below the threshold."""
    logits = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert open_set_score("max_softmax", logits)[1] == pytest.approx(1 / 3)
    assert open_set_score("energy", logits)[1] == pytest.approx(1 + np.log(3))
    assert open_set_score("max_logit", logits).tolist() == [4.0, 1.0]
    spec = OpenSetSpec(score="max_softmax", threshold=0.5)
    assert is_unknown(spec, logits).tolist() == [False, True]
    assert is_unknown(spec, logits, threshold=0.99).tolist() == [True, True]
    windows = np.random.default_rng(0).normal(size=(6, 5))
    pooled = pool_logits(windows, "max_softmax")
    assert np.allclose(softmax(pooled)[0], softmax(windows).mean(0))  # the clip decision's mean probabilities
    assert np.allclose(pool_logits(windows, "energy")[0], windows.mean(0))
    with pytest.raises(ValueError, match="open-set score"):
        open_set_score("entropy", logits)


def test_manifests_stay_backwards_compatible(tmp_path: Path) -> None:
    """A manifest written before kind / embedding / open_set existed still loads as a classifier."""
    shipped = sorted(ZOO.glob("*/manifest.json"))
    assert shipped
    for path in shipped:
        raw = json.loads(path.read_text())
        for key in ("kind", "embedding", "open_set"):
            raw.pop(key, None)
        old = ModelManifest.model_validate(raw)
        assert old.kind == "classifier" and old.open_set is None and old.embedding is None


def test_shipped_classifiers_can_say_unknown() -> None:
    """Both shipped classifiers carry an open-set rule with how it was chosen; on the UTD-MHAD test
    subjects' clips of its own 27 actions the UTD classifier accepts most windows."""
    import onnxruntime as ort

    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    for name in ("utd-mhad-stgcnpp-lite", "upfall-stgcnpp-lite"):
        m = load_manifest(ZOO / name)
        assert m.kind == "classifier" and m.open_set is not None, name
        assert m.open_set.score in LOGIT_SCORES and "held-out" in m.open_set.chosen_by
        assert m.open_set.metrics, name
    m = load_manifest(ZOO / "utd-mhad-stgcnpp-lite")
    assert m.open_set is not None
    sess = ort.InferenceSession(str(ZOO / "utd-mhad-stgcnpp-lite" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    clips = load_utd_mhad(require_data(), {2, 4})[::3]
    logits = [sess.run(None, {"skeleton": utd_windows(c, m.input)})[0] for c in clips]
    accepted = np.mean([not is_unknown(m.open_set, pool_logits(lg, m.open_set.score))[0] for lg in logits])
    assert accepted > 0.8, accepted


def test_shipped_embedding_enrols_and_rejects_on_real_windows() -> None:
    """The shipped ONNX embedding with the manifest's threshold: five actions enrolled from subject 1
    (two examples each) classify subject 2's clips of them, and subject 2's clips of five other
    actions are mostly unknown (they are far from every enrolled prototype)."""
    import onnxruntime as ort

    from training.metric_learning import utd_windows
    from training.utd_mhad import LABELS, load_utd_mhad

    m = load_manifest(EMBEDDING)
    assert m.kind == "embedding" and m.embedding is not None and m.open_set is not None
    assert m.open_set.score == "max_cosine" and m.labels == []
    sess = ort.InferenceSession(str(EMBEDDING / "model.onnx"), providers=["CPUExecutionProvider"])

    def vector(clip) -> np.ndarray:  # type: ignore[no-untyped-def]
        return pool(sess.run([m.onnx.output_name], {m.onnx.input_name: utd_windows(clip, m.input)})[0])

    clips = load_utd_mhad(require_data(), {1, 2})
    enrolled, others = (3, 7, 13, 22, 24), (5, 10, 16, 19, 26)
    protos = PrototypeSet.from_examples({LABELS[a - 1]: [vector(c) for c in clips if c.action == a
                                                         and c.subject == 1][:2] for a in enrolled})
    known = [c for c in clips if c.subject == 2 and c.action in enrolled]
    unknown = [c for c in clips if c.subject == 2 and c.action in others]
    thr, scale = m.open_set.threshold, m.embedding.logit_scale
    pk = protos.predict(np.stack([vector(c) for c in known]), thr, scale)
    pu = protos.predict(np.stack([vector(c) for c in unknown]), thr, scale)
    right = np.mean([p == LABELS[c.action - 1] for p, c in zip(pk.labels, known, strict=True)])
    assert right > 0.8, pk.labels
    assert np.mean(pu.labels == np.array(UNKNOWN)) > np.mean(pk.labels == np.array(UNKNOWN)) + 0.3
    assert pk.similarity.mean() > pu.similarity.mean()


@pytest.mark.skeleton_cache
def test_embedding_serves_on_mediapipe_skeletons() -> None:
    """The embedding reads MediaPipe landmarks through the classifiers' path (skeleton.preprocess):
    UP-Fall windows become unit vectors, and a fall's windows are nearer each other than to walking."""
    import onnxruntime as ort

    from skeleton.clip import window_ends
    from skeleton.preprocess import prepare_window, sequence_to_layout
    from training.skeleton_cache import load_clip

    m = load_manifest(EMBEDDING)
    sess = ort.InferenceSession(str(EMBEDDING / "model.onnx"), providers=["CPUExecutionProvider"])

    def clip_windows(rel: str) -> np.ndarray:
        clip = load_clip(require_cache(rel))
        track = clip.primary_track
        assert track is not None
        joints = sequence_to_layout(track, m.input, float(clip.height))
        seen = track.timestamps[np.isfinite(joints).all(axis=(1, 2))]
        w = m.input.window
        ends = window_ends(float(seen[0]), float(seen[-1]), w.seconds, w.stride / w.fps)
        x = np.stack([prepare_window(track.timestamps, joints, m.input, float(e)) for e in ends])
        return np.asarray(sess.run([m.onnx.output_name], {m.onnx.input_name: x})[0])

    fall, walk = clip_windows("Activity1/Trial2Cam1.npz"), clip_windows("Activity6/Trial2Cam1.npz")
    assert np.isfinite(fall).all() and np.allclose(np.linalg.norm(walk, axis=1), 1.0, atol=1e-4)
    walk_proto = PrototypeSet.from_examples({"walking": walk[: len(walk) // 2]})
    assert walk_proto.similarities(walk[len(walk) // 2 :]).mean() > walk_proto.similarities(fall).mean()
