"""Embedding export and "unknown" in manifests (issue 17): ONNX parity of an embedding checkpoint,
``python -m export open-set``, and the shipped models on real windows (UTD-MHAD, MediaPipe UP-Fall)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from skeleton.manifest import load_manifest
from skeleton.open_set import LOGIT_SCORES, SIMILARITY_SCORES, clip_score, open_set_score
from skeleton.prototypes import UNKNOWN, PrototypeSet, pool
from tests.conftest import REPO_ROOT, require_data
from tests.model_helpers import require_cache

ZOO = REPO_ROOT / "model_zoo"
EMBEDDING = ZOO / "embeddings" / "utd-mhad-stgcnpp-lite-embedding"
CLASSIFIERS = ("utd-mhad-stgcnpp-lite", "upfall-stgcnpp-lite")  # model_zoo/<name>, configs/<name>.yaml
SMALL = {  # one epoch of a small backbone: parity needs a real checkpoint, not a good one
    "model.kwargs": {"features": ["joint", "bone", "motion"], "base_channels": 16, "num_stages": 3,
                     "inflate_stages": [2], "down_stages": [2]},
    "optim.epochs": 1, "optim.warmup_epochs": 0, "optim.samples_per_epoch": 64,
}


def test_embedding_export_parity_and_manifest(tmp_path: Path) -> None:
    """``export_checkpoint`` on an embedding: ONNX Runtime matches PyTorch on real windows (unit
    vectors of the joint readout), and the manifest says what the service needs and round-trips."""
    import onnxruntime as ort
    import torch

    from export.onnx_export import EMBEDDING_OUTPUT_NAME, export_checkpoint
    from training import fewshot
    from training.checkpoint import load_checkpoint
    from training.metric_learning import utd_windows
    from training.train import train
    from training.utd_mhad import load_utd_mhad

    cfg = fewshot.split_config("r0", "embedding", overrides=SMALL)
    train(cfg, tmp_path / "run", require_data(), log=lambda _: None, plots=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    m = export_checkpoint(ckpt, tmp_path / "emb", require_data(), REPO_ROOT)
    model = load_checkpoint(ckpt).model
    assert m.kind == "embedding" and m.labels == [] and m.embedding is not None
    assert m.embedding.dim == model.dim and len(m.embedding.trained_on) == 20
    assert m.onnx.output_name == EMBEDDING_OUTPUT_NAME and m.onnx.output_shape == ["batch", model.dim]
    assert m.open_set is not None and m.open_set.score in SIMILARITY_SCORES  # from the config
    assert m.metrics["onnx_parity"]["rel_error"] < 1e-4
    assert load_manifest(tmp_path / "emb") == m
    clips = load_utd_mhad(require_data(), {2})[::40]
    windows = np.concatenate([utd_windows(c, m.input) for c in clips])
    sess = ort.InferenceSession(str(tmp_path / "emb" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([m.onnx.output_name], {m.onnx.input_name: windows})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(windows)).numpy()
    assert got.shape == (len(windows), model.dim) and np.abs(got - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_open_set_command_writes_only_the_manifest_field(tmp_path: Path) -> None:
    """``python -m export open-set`` copies a config's rule into a model's manifest: the ONNX file and
    every other manifest field stay as they were (a re-exported model gets it by the same command)."""
    from export.__main__ import main
    from training.config import load_config

    src = ZOO / "upfall-stgcnpp-lite"
    model = tmp_path / "upfall-stgcnpp-lite"
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("*.png", "checkpoint.pt", "trt_cache"))
    before = load_manifest(model)
    onnx_sha = hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest()
    config = REPO_ROOT / "configs" / "upfall-stgcnpp-lite.yaml"
    assert main(["open-set", "--model-dir", str(model), "--config", str(config)]) == 0
    after = load_manifest(model)
    assert after.open_set == load_config(config).open_set and after.open_set is not None
    assert after.model_dump(exclude={"open_set"}) == before.model_dump(exclude={"open_set"})
    assert hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest() == onnx_sha
    assert main(["open-set", "--model-dir", str(model), "--config",
                 str(REPO_ROOT / "configs" / "upfall-stgcnpp-lite-t1.yaml")]) == 1  # no open_set section


def test_shipped_classifiers_can_say_unknown() -> None:
    """Both shipped classifiers carry the open-set rule of their config (chosen on held-out actions);
    at its threshold the UTD-MHAD classifier keeps most test-subject clips of its own actions."""
    import onnxruntime as ort

    from training.config import load_config
    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    for name in CLASSIFIERS:
        m = load_manifest(ZOO / name)
        rule = load_config(REPO_ROOT / "configs" / f"{name}.yaml").open_set
        assert m.kind == "classifier" and m.open_set == rule and rule is not None, name
        assert rule.score in LOGIT_SCORES and "held-out" in rule.chosen_by and rule.metrics, name
    m = load_manifest(ZOO / "utd-mhad-stgcnpp-lite")
    assert m.open_set is not None
    sess = ort.InferenceSession(str(ZOO / "utd-mhad-stgcnpp-lite" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    clips = load_utd_mhad(require_data(), {2, 4})[::3]
    logits = [sess.run(None, {m.onnx.input_name: utd_windows(c, m.input)})[0] for c in clips]
    scores = np.array([clip_score(open_set_score(m.open_set.score, lg)) for lg in logits])
    accepted = np.mean(scores >= m.open_set.threshold)
    assert accepted > 0.8, accepted


def _embed(sess, m, windows: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(sess.run([m.onnx.output_name], {m.onnx.input_name: windows})[0])


def test_shipped_embedding_enrols_and_rejects_on_real_windows() -> None:
    """The shipped ONNX embedding with its Kinect-20 threshold (the manifest's is chosen on MediaPipe,
    which the service sees): five actions enrolled from subject 1 (two examples each) classify
    subject 2's clips of them, and subject 2's clips of five other actions are mostly unknown."""
    import onnxruntime as ort

    from training.metric_learning import utd_windows
    from training.utd_mhad import LABELS, load_utd_mhad

    m = load_manifest(EMBEDDING)
    assert m.kind == "embedding" and m.embedding is not None and m.open_set is not None
    assert m.open_set.score in SIMILARITY_SCORES and m.labels == []
    assert m.embedding.dim == m.onnx.output_shape[1]
    sess = ort.InferenceSession(str(EMBEDDING / "model.onnx"), providers=["CPUExecutionProvider"])

    def vector(clip) -> np.ndarray:  # type: ignore[no-untyped-def]
        return pool(_embed(sess, m, utd_windows(clip, m.input)))

    clips = load_utd_mhad(require_data(), {1, 2})
    enrolled, others = (3, 7, 13, 22, 24), (5, 10, 16, 19, 26)
    protos = PrototypeSet.from_examples({LABELS[a - 1]: [vector(c) for c in clips if c.action == a
                                                         and c.subject == 1][:2] for a in enrolled})
    known = [c for c in clips if c.subject == 2 and c.action in enrolled]
    unknown = [c for c in clips if c.subject == 2 and c.action in others]
    thr, scale = m.open_set.metrics["utd_mhad_threshold"], m.embedding.logit_scale
    closed = protos.predict(np.stack([vector(c) for c in known]), None, scale)
    right = np.mean([p == LABELS[c.action - 1] for p, c in zip(closed.labels, known, strict=True)])
    assert right > 0.8, closed.labels
    pk = protos.predict(np.stack([vector(c) for c in known]), thr, scale)
    pu = protos.predict(np.stack([vector(c) for c in unknown]), thr, scale)
    accepted = np.mean([p == LABELS[c.action - 1] for p, c in zip(pk.labels, known, strict=True)])
    rejected = np.mean(np.array(pu.labels) == UNKNOWN)
    assert accepted > 0.6 and rejected > 0.8 and rejected > np.mean(np.array(pk.labels) == UNKNOWN) + 0.3, (
        pk.labels, pu.labels)
    assert pk.similarity.mean() > pu.similarity.mean()


def test_shipped_embedding_is_centred_and_its_threshold_chosen_on_mediapipe() -> None:
    """The shipped ONNX graph is the 9-member ensemble (docs/fewshot.md "Ensemble of recipes"), each
    member centred on its training windows (subjects 1,3,5,7): their outputs average to a short vector
    (uncentred: about 0.83 long), member by member. Its manifest carries the ensemble config's
    threshold, chosen on MediaPipe UP-Fall skeletons, and its calibrated scale."""
    import onnxruntime as ort

    from training.config import load_config
    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    m = load_manifest(EMBEDDING)
    own = load_config(REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite-embedding-ensemble.yaml")
    assert m.open_set == own.open_set and m.open_set is not None and "UP-Fall" in m.open_set.chosen_by
    assert m.embedding is not None and own.embedding is not None
    assert m.embedding.logit_scale == own.embedding.logit_scale
    assert m.ensemble is not None and m.ensemble.combine == "mean_cosine" and len(m.ensemble.members) == 9
    sess = ort.InferenceSession(str(EMBEDDING / "model.onnx"), providers=["CPUExecutionProvider"])
    clips = load_utd_mhad(require_data(), {1, 3, 5, 7})[::6]
    out = _embed(sess, m, np.concatenate([utd_windows(c, m.input) for c in clips]))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    members = out.reshape(len(out), 9, -1) * 3.0  # each member's own unit vector
    for k in range(9):
        assert np.linalg.norm(members[:, k].mean(axis=0)) < 0.3, k


@pytest.mark.skeleton_cache
def test_embedding_serves_on_mediapipe_skeletons() -> None:
    """The embedding reads MediaPipe landmarks through the classifiers' path (skeleton.preprocess):
    UP-Fall windows become unit vectors, and walking's windows are nearer each other than a fall's."""
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
        return _embed(sess, m, x)

    fall, walk = clip_windows("Activity1/Trial2Cam1.npz"), clip_windows("Activity6/Trial2Cam1.npz")
    assert np.isfinite(fall).all() and np.allclose(np.linalg.norm(walk, axis=1), 1.0, atol=1e-4)
    walk_proto = PrototypeSet.from_examples({"walking": walk[: len(walk) // 2]})
    assert walk_proto.similarities(walk[len(walk) // 2 :]).mean() > walk_proto.similarities(fall).mean()
