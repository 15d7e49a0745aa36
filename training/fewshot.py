"""Few-shot and open-set ("unknown") protocol on UTD-MHAD: one command trains what is missing and measures.

    python -m training.fewshot run [--splits 21-27 r0 r1 r2 r3 all] [--draws 50]  # the whole report
    python -m training.fewshot select            # the method choice, on training subjects/classes only
    python -m training.fewshot select-readout    # centred or not, mirrored, k-NN: training subjects only
    python -m training.fewshot calibrate         # open-set thresholds, on training subjects only
    python -m training.fewshot centre --checkpoint runs/fewshot/all/embedding/checkpoint.pt  # before export

Protocol (issue 17): for a split, an embedding and the plain ST-GCN++ lite classifier (the baseline)
are trained on its 20 base actions with training subjects 1,3,5,7; its 7 unseen actions are enrolled
with 1 or 5 examples per action drawn from the training subjects and every clip of test subjects
2,4,6,8 of those actions is classified (7-way) by the nearest prototype (cosine), over ``--draws``
random draws of the examples (the same draws for every method). Methods: the embedding, the
classifier's pooled penultimate features, and an untrained network of the same architecture.

A clip becomes an example or a query the way the service sees a stream: it is played at 30 fps,
cut into the model's windows (``skeleton.clip.window_ends``, 32 frames at 15 fps every 4 frames,
``skeleton.preprocess.prepare_window``), each window is embedded, and the clip's vector is the
normalised mean of its window vectors (``skeleton.prototypes.pool``). Every method goes through
exactly this path.

Open set: on every split whose unseen actions are mostly of one kind (``same_kind``: arm gestures,
or leg/whole-body actions), each draw enrols about half of that group; test clips of the rest must
come out unknown. Score = cosine to the nearest prototype; thresholds come from ``calibrate``
(training subjects only, on the ``cal`` split). The classifiers' own "unknown" (maximum softmax,
maximum logit, energy) is measured on every split's held-out actions with the threshold chosen by
``calibrate``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import build_model
from models.embedding import SkeletonEmbedder
from models.ensemble import EmbeddingEnsemble
from models.stgcn import STGCNClassifier
from skeleton.open_set import LOGIT_SCORES, clip_score, open_set_score, softmax
from skeleton.paths import REPO_ROOT, data_root
from skeleton.prototypes import PrototypeSet, normalize
from training.checkpoint import load_checkpoint
from training.config import TrainConfig, load_config
from training.metric_learning import (
    Encoder,
    embedder_encoder,
    encode,
    feature_encoder,
    fit_centre,
    head_encoder,
    joints_encoder,
    refit_centre,
    utd_windows,
)
from training.metrics import auroc, youden_threshold
from training.utd_mhad import LABELS, UtdClip, load_utd_mhad

ALL_ACTIONS = tuple(range(1, len(LABELS) + 1))
ARM_ACTIONS = tuple(range(1, 21))  # standing arm/hand gestures; 21-27 move the legs or the whole body
TRAIN_SUBJECTS = (1, 3, 5, 7)
TEST_SUBJECTS = (2, 4, 6, 8)
SHOTS = (1, 5)
RANDOM_SPLIT_SEEDS = (0, 1, 2, 3)
# The embedding's ensemble (issue 17; docs/fewshot.md "Ensemble of recipes"): three seeds of each of
# three recipes, the shipped one and two augmentations that each alone did not beat it (different
# proportions of the body; arms and legs swapped as extra training actions), combined by
# ``models.ensemble.EmbeddingEnsemble``. Round 4 shipped seeds only (3 members).
ENSEMBLE_SEEDS = (0, 1, 2)
RECIPES: dict[str, dict[str, Any]] = {
    "": {},
    "bones": {"augment.bones": 0.2},
    "swap": {"embedding.limb_swap": True},
}
EMBEDDING_CONFIG = REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite-embedding.yaml"
CLASSIFIER_CONFIG = REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite.yaml"
OUT = REPO_ROOT / "runs" / "fewshot"
# The shipped 27-action classifier: the "all" split's baseline and its supervised reference.
SHIPPED_CLASSIFIER = REPO_ROOT / "model_zoo" / "utd-mhad-stgcnpp-lite" / "checkpoint.pt"
CALIBRATION_SUBJECTS = (1, 3, 5)  # the calibration classifier leaves subject 7 out for its known-class scores


def calibration_actions() -> list[int]:
    """Seeded choice of 7 arm gestures: the unseen actions of the ``cal`` split (training subjects only)."""
    return sorted(int(a) for a in np.random.default_rng(17).permutation(ARM_ACTIONS)[:7])


def splits() -> dict[str, list[int]]:
    """Split name -> its unseen actions (1-based). ``all``: every action is enrolled (27-way few-shot)."""
    out = {"21-27": list(range(21, 28))}
    for s in RANDOM_SPLIT_SEEDS:
        out[f"r{s}"] = sorted(int(a) for a in np.random.default_rng(s).choice(ALL_ACTIONS, 7, replace=False))
    out.update({"cal": calibration_actions(), "all": []})
    return out


def same_kind(actions: Sequence[int]) -> list[int] | None:
    """The larger of the arm-gesture / leg-and-whole-body groups of ``actions`` if it has >= 5 actions:
    the open-set protocol enrols about half of them and asks for "unknown" on the rest."""
    arm = [a for a in actions if a in ARM_ACTIONS]
    other = [a for a in actions if a not in ARM_ACTIONS]
    group = arm if len(arm) >= len(other) else other
    return group if len(group) >= 5 else None


def base_actions(split: str) -> list[int]:
    unseen = set(splits()[split])
    return [a for a in ALL_ACTIONS if a not in unseen]


def unseen_actions(split: str) -> list[int]:
    return splits()[split] or list(ALL_ACTIONS)


# ------------------------------------------------------------------------------------------ training


def split_config(
    split: str, kind: str, subjects: Sequence[int] = TRAIN_SUBJECTS, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The recipe (embedding or plain classifier config) restricted to the split's base actions."""
    path = EMBEDDING_CONFIG if kind == "embedding" else CLASSIFIER_CONFIG
    held_out = [s for s in TRAIN_SUBJECTS if s not in subjects]
    test = held_out if held_out else ([] if kind == "embedding" else list(TEST_SUBJECTS))
    return load_config(
        path,
        {
            "name": f"fewshot-{split}-{kind}",
            "threads": 1,
            "dataset.classes": base_actions(split),
            "dataset.train_subjects": list(subjects),
            "dataset.test_subjects": test,
            "optim.eval_every": 10,
            **(overrides or {}),
        },
    )


def member_dir(out: Path, split: str, seed: int, recipe: str = "") -> Path:
    """The run folder of one member of a split's embedding ensemble: ``embedding`` (the shipped
    recipe, seed 0: the single model), ``embedding-s<seed>``, ``embedding-<recipe>[-s<seed>]``."""
    parts = ["embedding", *([recipe] if recipe else []), *([f"s{seed}"] if seed else [])]
    return out / split / "-".join(parts)


def ensemble_members(
    out: Path, split: str, seeds: Sequence[int] = ENSEMBLE_SEEDS, recipes: Sequence[str] = tuple(RECIPES)
) -> list[Path] | None:
    """The checkpoints of the split's ensemble (every recipe, every seed), or None while any member
    is untrained (``python -m training.fewshot train --kinds embedding --seeds 0 1 2 --recipes ...``)."""
    ckpts = [member_dir(out, split, s, r) / "checkpoint.pt" for r in recipes for s in seeds]
    return ckpts if all(c.is_file() for c in ckpts) else None


def train_run(cfg: TrainConfig, out_dir: Path, root: Path, log: Callable[[str], None] = print) -> Path:
    """Train ``cfg`` into ``out_dir`` unless its checkpoint exists (the protocol resumes)."""
    from training.train import train

    ckpt = out_dir / "checkpoint.pt"
    if ckpt.is_file():
        return ckpt
    t0 = time.perf_counter()
    lines: list[str] = []

    def tee(msg: str) -> None:
        lines.append(msg)
        log(f"[{cfg.name}] {msg}")

    train(cfg, out_dir, root, tee)
    (out_dir / "train.log").write_text("\n".join(lines) + "\n")
    log(f"[{cfg.name}] trained in {time.perf_counter() - t0:.0f} s")
    return ckpt


# ----------------------------------------------------------------------------------------- the clips


@dataclass
class ClipBank:
    """Every UTD-MHAD clip as service windows, with its action and subject."""

    clips: list[UtdClip]
    windows: list[np.ndarray]
    actions: np.ndarray
    subjects: np.ndarray

    @classmethod
    def load(cls, root: Path, spec_cfg: TrainConfig) -> ClipBank:
        clips = load_utd_mhad(root)
        return cls(
            clips,
            [utd_windows(c, spec_cfg.input) for c in clips],
            np.array([c.action for c in clips]),
            np.array([c.subject for c in clips]),
        )

    def vectors(self, encoder: Encoder, keep: np.ndarray | None = None) -> np.ndarray:
        """(clips, D) pooled clip vectors (rows outside ``keep`` are zeros and never read)."""
        from training.metric_learning import pooled_vectors

        idx = np.arange(len(self.clips)) if keep is None else np.flatnonzero(keep)
        vecs = pooled_vectors(encoder, [self.windows[i] for i in idx])
        out = np.zeros((len(self.clips), vecs.shape[1]), np.float32)
        out[idx] = vecs
        return out

    def window_values(self, fn: Encoder, keep: np.ndarray) -> list[np.ndarray]:
        """Per kept clip, (W, K) outputs of every window (a classifier's logits)."""
        idx = np.flatnonzero(keep)
        flat = fn(np.concatenate([self.windows[i] for i in idx]))
        bounds = np.cumsum([0, *(len(self.windows[i]) for i in idx)])
        return [flat[a:b] for a, b in itertools.pairwise(bounds)]


def run_encoder(ckpt: Path) -> Encoder:
    """An embedding's vectors, or a classifier's pooled penultimate features."""
    ck = load_checkpoint(ckpt)
    if ck.config.embedding is not None:
        return embedder_encoder(ck.model)  # type: ignore[arg-type]
    assert isinstance(ck.model, STGCNClassifier)
    return feature_encoder(ck.model)


def backbone_of(ckpt: Path | None, cfg: TrainConfig, seed: int = 0) -> STGCNClassifier:
    """The trained backbone of an embedding or classifier checkpoint; None: a fresh, untrained one."""
    if ckpt is None:
        torch.manual_seed(seed)
        model = build_model(cfg.model.arch, 1, cfg.input.layout, **cfg.model.kwargs)
    else:
        model = load_checkpoint(ckpt).model
        model = model.backbone if isinstance(model, SkeletonEmbedder) else model
    assert isinstance(model, STGCNClassifier)
    return model


def centred_embedding(ckpt: Path, bank: ClipBank, actions: Sequence[int]) -> SkeletonEmbedder:
    """The embedding with its output centre fitted on ``actions``' windows of the training subjects
    (what it was trained on), as ``training.metric_learning.train_embedding`` now does itself."""
    model = load_checkpoint(ckpt).model
    assert isinstance(model, SkeletonEmbedder)
    keep = np.flatnonzero(np.isin(bank.actions, list(actions)) & np.isin(bank.subjects, TRAIN_SUBJECTS))
    fit_centre(model, np.concatenate([bank.windows[i] for i in keep]))
    return model


def centred_members(
    ckpts: Sequence[Path], bank: ClipBank, actions: Sequence[int], fitted: dict[Path, SkeletonEmbedder]
) -> list[SkeletonEmbedder]:
    """The ensemble's members, each centred as ``centred_embedding``; a checkpoint in ``fitted``
    (the split's single embedding, centred already) is not loaded and centred again."""
    return [fitted[c] if c in fitted else centred_embedding(c, bank, actions) for c in ckpts]


def method_encoders(
    emb: Path,
    clf: Path,
    cfg: TrainConfig,
    bank: ClipBank,
    base: Sequence[int],
    members: Sequence[Path] | None = None,
) -> dict[str, Encoder]:
    """Every compared method. ``embedding`` is the model as exported (its centred joint readout,
    the centre fitted on the split's base actions); the baselines are as the issue defines them
    (pooled penultimate features of the plain classifier, of an untrained network), and each
    backbone is also read out like the embedding (``*-joints``, ``embedding-pooled``,
    ``embedding-uncentred``) to show what the training, the readout and the centring contribute.
    With ``members``, their ensemble is ``embedding-ensemble``."""
    backbones = {
        "embedding": backbone_of(emb, cfg),
        "classifier": backbone_of(clf, cfg),
        "untrained": backbone_of(None, cfg),
    }
    single = centred_embedding(emb, bank, base)
    ensemble = {}
    if members:
        each = centred_members(members, bank, base, {emb: single})
        ensemble["embedding-ensemble"] = embedder_encoder(EmbeddingEnsemble(each))
    return ensemble | {
        "embedding": embedder_encoder(single),
        "embedding-uncentred": joints_encoder(backbones["embedding"]),
        "embedding-pooled": feature_encoder(backbones["embedding"]),
        "classifier": feature_encoder(backbones["classifier"]),
        "classifier-joints": joints_encoder(backbones["classifier"]),
        "untrained": feature_encoder(backbones["untrained"]),
        "untrained-joints": joints_encoder(backbones["untrained"]),
    }


# ------------------------------------------------------------------------------------------ episodes


@dataclass(frozen=True)
class Episode:
    support: dict[int, np.ndarray]  # enrolled action -> example clip indices
    queries: np.ndarray  # clip indices


def draw_episodes(
    bank: ClipBank,
    actions: Sequence[int],
    shots: int,
    draws: int,
    seed: int,
    enrol_subjects: Sequence[int] | None,
    query_subjects: Sequence[int] | None,
    known: int | None = None,
    query_actions: Sequence[int] | None = None,
) -> list[Episode]:
    """``draws`` episodes: ``known`` (default all) of ``actions`` enrolled with ``shots`` examples from
    ``enrol_subjects``; queries = every clip of ``query_actions`` (default ``actions``) by
    ``query_subjects``. With both subject lists None (validation inside the training subjects),
    each draw picks one training subject to query and enrols from the other three."""
    rng = np.random.default_rng(seed)
    in_queries = np.isin(bank.actions, list(query_actions or actions))
    out = []
    for _ in range(draws):
        if enrol_subjects is None or query_subjects is None:
            q = int(rng.choice(TRAIN_SUBJECTS))
            enrol, query = [s for s in TRAIN_SUBJECTS if s != q], [q]
        else:
            enrol, query = list(enrol_subjects), list(query_subjects)
        chosen = (
            sorted(int(a) for a in rng.choice(actions, size=known, replace=False)) if known else list(actions)
        )
        support = {}
        for a in chosen:
            pool_idx = np.flatnonzero((bank.actions == a) & np.isin(bank.subjects, enrol))
            support[a] = rng.choice(pool_idx, size=shots, replace=len(pool_idx) < shots)
        out.append(Episode(support, np.flatnonzero(in_queries & np.isin(bank.subjects, query))))
    return out


def episode_scores(
    vecs: np.ndarray, bank: ClipBank, ep: Episode
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true action, predicted action, cosine to the nearest prototype) of every query, through the
    service's own prototype code (``skeleton.prototypes``)."""
    protos = PrototypeSet.from_examples({str(a): vecs[idx] for a, idx in ep.support.items()})
    pred = protos.predict(vecs[ep.queries])
    return bank.actions[ep.queries], np.array([int(x) for x in pred.labels]), pred.similarity


def fit_logit_scale(bank: ClipBank, *runs: tuple[np.ndarray, list[Episode]]) -> float:
    """Temperature scaling: the ``s`` minimising the negative log-likelihood of softmax(s * cosine)
    over the queries of closed-set episodes (``runs``: vectors and their episodes, pooled), so the
    served per-label probabilities (clip rule, confidences) are calibrated; a grid search over
    1..1000."""
    rows = []
    for v, episodes in runs:
        for ep in episodes:
            protos = PrototypeSet.from_examples({str(a): v[idx] for a, idx in ep.support.items()})
            sims = protos.similarities(v[ep.queries]).astype(np.float64)
            truth = np.array([protos.labels.index(str(a)) for a in bank.actions[ep.queries]])
            rows.append((sims, truth))
    grid = np.geomspace(1.0, 1000.0, 241)

    def nll(scale: float) -> float:
        total, n = 0.0, 0
        for sims, truth in rows:
            z = scale * sims
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            total -= float(logp[np.arange(len(truth)), truth].sum())
            n += len(truth)
        return total / max(n, 1)

    return float(grid[int(np.argmin([nll(s) for s in grid]))])


def closed_set(vecs: np.ndarray, bank: ClipBank, episodes: list[Episode]) -> dict[str, Any]:
    """Mean and spread over draws of the top-1 over all queries (every query's action is enrolled)."""
    acc = [float((t == p).mean()) for t, p, _ in (episode_scores(vecs, bank, ep) for ep in episodes)]
    return {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "draws": len(acc)}


def open_set(
    vecs: np.ndarray, bank: ClipBank, episodes: list[Episode], threshold: float | None
) -> dict[str, Any]:
    """Known = enrolled actions' queries, unknown = the others': AUROC of the max cosine, and at
    ``threshold``: coverage (knowns accepted), unknowns rejected, top-1 on accepted knowns, and
    open-set accuracy (a known query accepted with the right label, an unknown rejected)."""
    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "auroc",
            "closed_top1",
            "coverage",
            "unknown_rejected",
            "accepted_top1",
            "open_set_accuracy",
        )
    }
    for ep in episodes:
        true, pred, score = episode_scores(vecs, bank, ep)
        known = np.isin(true, list(ep.support))
        rows["auroc"].append(auroc(score[known], score[~known]))
        rows["closed_top1"].append(float((true == pred)[known].mean()))
        if threshold is not None:
            accept = score >= threshold
            rows["coverage"].append(float(accept[known].mean()))
            rows["unknown_rejected"].append(float((~accept[~known]).mean()))
            ok_known = (true == pred) & accept & known
            rows["accepted_top1"].append(float(ok_known.sum() / max(1, (accept & known).sum())))
            rows["open_set_accuracy"].append(float((ok_known | (~accept & ~known)).mean()))
    out: dict[str, Any] = {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in rows.items() if v
    }
    return out | {"threshold": threshold, "draws": len(episodes)}


def pooled_scores(vecs: np.ndarray, bank: ClipBank, episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """All draws' known and unknown max-cosine scores (calibration)."""
    known, unknown = [], []
    for ep in episodes:
        true, _, score = episode_scores(vecs, bank, ep)
        k = np.isin(true, list(ep.support))
        known.append(score[k])
        unknown.append(score[~k])
    return np.concatenate(known), np.concatenate(unknown)


# ------------------------------------------------------------------------------ classifier "unknown"


def classifier_window_logits(ckpt: Path, bank: ClipBank, keep: np.ndarray) -> list[np.ndarray]:
    ck = load_checkpoint(ckpt)
    return bank.window_values(lambda w: encode(ck.model, w), keep)


def classifier_scores(
    logits: list[np.ndarray],
    actions: np.ndarray,
    known_actions: Sequence[int],
) -> dict[str, dict[str, np.ndarray]]:
    """Score name -> known / unknown clip scores (median of the windows', ``skeleton.open_set.clip_score``),
    the same for single windows, and whether each known clip's label is right."""
    is_known = np.isin(actions, list(known_actions))
    index = {a: i for i, a in enumerate(known_actions)}
    pred = np.array(
        [int(softmax(lg).mean(axis=0).argmax()) for lg in logits]
    )  # the clip label: mean probabilities
    correct = (pred == np.array([index.get(int(a), -1) for a in actions]))[is_known]
    out: dict[str, dict[str, np.ndarray]] = {}
    for score in LOGIT_SCORES:
        win = [open_set_score(score, lg) for lg in logits]
        clip = np.array([clip_score(w) for w in win])
        out[score] = {
            "known": clip[is_known],
            "unknown": clip[~is_known],
            "correct": correct,
            "window_known": np.concatenate([w for w, k in zip(win, is_known, strict=True) if k]),
            "window_unknown": np.concatenate([w for w, k in zip(win, is_known, strict=True) if not k]),
        }
    return out


def classifier_open_set(s: dict[str, np.ndarray], threshold: float | None) -> dict[str, Any]:
    """AUROC (clips and windows) and, at ``threshold``, the same quantities as ``open_set``."""
    out: dict[str, Any] = {
        "auroc": auroc(s["known"], s["unknown"]),
        "window_auroc": auroc(s["window_known"], s["window_unknown"]),
        "closed_top1": float(s["correct"].mean()),
        "known_clips": len(s["known"]),
        "unknown_clips": len(s["unknown"]),
        "threshold": threshold,
    }
    if threshold is not None:
        accept_k, accept_u = s["known"] >= threshold, s["unknown"] >= threshold
        out.update(
            {
                "coverage": float(accept_k.mean()),
                "unknown_rejected": float((~accept_u).mean()),
                "accepted_top1": float((s["correct"] & accept_k).sum() / max(1, accept_k.sum())),
                "open_set_accuracy": float(
                    ((s["correct"] & accept_k).sum() + (~accept_u).sum()) / (len(accept_k) + len(accept_u))
                ),
                "window_coverage": float((s["window_known"] >= threshold).mean()),
                "window_unknown_rejected": float((s["window_unknown"] < threshold).mean()),
            }
        )
    return out


# ------------------------------------------------------------------------------------------ commands


def _log(msg: str) -> None:
    print(msg, flush=True)


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _known_count(n: int) -> int:
    return (n + 1) // 2  # 7 -> 4 enrolled + 3 unknown, 6 -> 3 + 3, 5 -> 3 + 2


def calibrate(
    out: Path, root: Path, draws: int, bank: ClipBank, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Open-set thresholds from the training subjects only (split ``cal``, 7 unseen arm gestures).

    Few-shot methods (max cosine): cross-subject episodes inside subjects 1,3,5,7 (enrol from three,
    query the fourth), 4 of the 7 enrolled, the other 3 unknown. The classifier (maximum softmax,
    maximum logit or energy, chosen by window AUROC): trained on the 20 base actions of subjects
    1,3,5; known = base actions of subject 7, unknown = the 7 unseen of subject 7 (its windows).
    Each threshold maximises Youden's J (knowns accepted minus unknowns accepted) on the pooled
    scores; each embedding's softmax scale is fitted by temperature scaling on the same episodes.
    """
    t0 = time.perf_counter()
    cal = unseen_actions("cal")
    emb = train_run(
        split_config("cal", "embedding", overrides=overrides), out / "cal" / "embedding", root, _log
    )
    clf = train_run(
        split_config("cal", "classifier", subjects=CALIBRATION_SUBJECTS, overrides=overrides),
        out / "cal" / "classifier-135",
        root,
        _log,
    )
    keep = np.isin(bank.actions, cal) & np.isin(bank.subjects, TRAIN_SUBJECTS)
    result: dict[str, Any] = {"split": "cal", "unseen": cal, "draws": draws, "methods": {}}
    members = ensemble_members(out, "cal")  # the ensemble's scale and threshold, once its members are trained
    encoders = method_encoders(emb, clf, split_config("cal", "embedding"), bank, base_actions("cal"), members)
    for name, enc in encoders.items():
        vecs = bank.vectors(enc, keep)
        per_shot = {}
        for shots in SHOTS:
            eps = draw_episodes(bank, cal, shots, draws, 1000 + shots, None, None, _known_count(len(cal)))
            k, u = pooled_scores(vecs, bank, eps)
            closed = draw_episodes(bank, cal, shots, draws, 1100 + shots, None, None)
            per_shot[str(shots)] = {
                "threshold": youden_threshold(k, u),
                "auroc": auroc(k, u),
                "logit_scale": fit_logit_scale(bank, (vecs, closed)),
            }
        # one value per method (what a manifest holds): the mean of the 1- and 5-shot choices
        result["methods"][name] = {
            "score": "max_cosine",
            "threshold": float(np.mean([v["threshold"] for v in per_shot.values()])),
            "logit_scale": float(np.mean([v["logit_scale"] for v in per_shot.values()])),
            "per_shot": per_shot,
        }
    keep7 = np.isin(bank.subjects, [7])
    scores = classifier_scores(
        classifier_window_logits(clf, bank, keep7), bank.actions[keep7], base_actions("cal")
    )
    per_score = {
        name: {
            "auroc": auroc(s["known"], s["unknown"]),
            "window_auroc": auroc(s["window_known"], s["window_unknown"]),
            # windows: what a stream labels (a clip pools its windows' values into the same range)
            "threshold": youden_threshold(s["window_known"], s["window_unknown"]),
            "clip_threshold": youden_threshold(s["known"], s["unknown"]),
        }
        for name, s in scores.items()
    }
    best = max(per_score, key=lambda n: per_score[n]["window_auroc"])
    result["classifier"] = {
        "scores": per_score,
        "chosen_score": best,
        "threshold": per_score[best]["threshold"],
        "known_clips": len(scores[best]["known"]),
        "unknown_clips": len(scores[best]["unknown"]),
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _save(out / "calibration.json", result)
    return result


def with_ensemble_threshold(thresholds: dict[str, Any], out: Path) -> dict[str, Any]:
    """``thresholds`` with the ensemble's max-cosine threshold from ``select-readout`` (the one its
    manifest holds; chosen on training subjects) where ``calibrate`` had no ``cal`` ensemble."""
    path = out / "select-readout.json"
    choice = (json.loads(path.read_text()) if path.is_file() else {}).get("ensemble_choice") or {}
    methods = thresholds.setdefault("methods", {})
    if "embedding-ensemble" not in methods and "max_cosine_threshold" in choice:
        methods["embedding-ensemble"] = {
            "score": "max_cosine",
            "threshold": float(choice["max_cosine_threshold"]),
            "chosen_by": "select-readout: Youden's J, training subjects, half of the unseen enrolled",
        }
    return thresholds


def evaluate_split(
    split: str,
    out: Path,
    root: Path,
    draws: int,
    bank: ClipBank,
    thresholds: dict[str, Any] | None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the split's embedding and classifier if missing, then every measurement on the split."""
    t_split = time.perf_counter()
    emb = train_run(
        split_config(split, "embedding", overrides=overrides), out / split / "embedding", root, _log
    )
    clf = (
        SHIPPED_CLASSIFIER
        if split == "all"
        else train_run(
            split_config(split, "classifier", overrides=overrides), out / split / "classifier", root, _log
        )
    )
    unseen, base = unseen_actions(split), base_actions(split)
    group = same_kind(unseen) if split != "all" else None
    cross_kind = split == "21-27"  # enrol the 7 leg/whole-body actions, the base arm gestures are unknown
    keep = np.isin(bank.actions, unseen) | (cross_kind & np.isin(bank.subjects, TEST_SUBJECTS))
    members = ensemble_members(out, split)
    encoders = method_encoders(emb, clf, split_config(split, "embedding"), bank, base, members)
    result: dict[str, Any] = {
        "split": split,
        "unseen": unseen,
        "base": base,
        "same_kind": group,
        "draws": draws,
        "ensemble": [str(m.parent.name) for m in members or []],
        "few_shot": {},
        "open_set": {},
        "open_set_cross_kind": {},
    }
    methods = (thresholds or {}).get("methods", {})
    for name, enc in encoders.items():
        t0 = time.perf_counter()
        vecs = bank.vectors(enc, keep)
        result["few_shot"][name] = {
            str(k): closed_set(
                vecs, bank, draw_episodes(bank, unseen, k, draws, k, TRAIN_SUBJECTS, TEST_SUBJECTS)
            )
            for k in SHOTS
        }
        thr = methods.get(name, {}).get("threshold")
        if group:
            result["open_set"][name] = {
                str(k): open_set(
                    vecs,
                    bank,
                    draw_episodes(
                        bank,
                        group,
                        k,
                        draws,
                        100 + k,
                        TRAIN_SUBJECTS,
                        TEST_SUBJECTS,
                        _known_count(len(group)),
                    ),
                    thr,
                )
                for k in SHOTS
            }
        if cross_kind:
            result["open_set_cross_kind"][name] = {
                str(k): open_set(
                    vecs,
                    bank,
                    draw_episodes(
                        bank,
                        unseen,
                        k,
                        draws,
                        200 + k,
                        TRAIN_SUBJECTS,
                        TEST_SUBJECTS,
                        query_actions=ALL_ACTIONS,
                    ),
                    thr,
                )
                for k in SHOTS
            }
        _log(
            f"[{split}] {name}: "
            + ", ".join(
                f"{k}-shot {100 * v['mean']:.1f} ± {100 * v['std']:.1f}"
                for k, v in result["few_shot"][name].items()
            )
            + f" ({time.perf_counter() - t0:.0f} s)"
        )
    test = np.isin(bank.subjects, TEST_SUBJECTS)
    logits = classifier_window_logits(clf, bank, test)
    if split == "all":  # the supervised classifier itself, through the same windows (mean probabilities)
        pred = np.array([int(softmax(lg).mean(axis=0).argmax()) + 1 for lg in logits])
        result["supervised_top1"] = float((pred == bank.actions[test]).mean())
    else:
        c = (thresholds or {}).get("classifier", {})
        scores = classifier_scores(logits, bank.actions[test], base)
        result["classifier_unknown"] = {
            name: classifier_open_set(s, c.get("threshold") if name == c.get("chosen_score") else None)
            for name, s in scores.items()
        }
    result["seconds"] = round(time.perf_counter() - t_split, 1)
    _save(out / split / "fewshot.json", result)
    return result


def select(
    out: Path,
    root: Path,
    draws: int,
    variants: dict[str, dict[str, Any]],
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare embedding objectives on the ``cal`` split with validation inside the training subjects:
    each draw enrols the 7 unseen arm gestures from three training subjects and queries the fourth.
    Each variant's result is kept in its run folder; ``select.json`` gathers every finished one."""
    bank = ClipBank.load(root, split_config("cal", "embedding"))
    unseen = unseen_actions("cal")
    keep = np.isin(bank.actions, unseen) & np.isin(bank.subjects, TRAIN_SUBJECTS)
    runs = out / "cal" / "select"
    for name, over in variants.items():
        kind = "classifier" if name == "classifier" else "embedding"
        cfg = split_config("cal", kind, overrides={**(overrides or {}), **over})
        if name == "untrained":  # the reference: a fresh network, both readouts
            fresh = backbone_of(None, cfg)
            encoders = {"val_joints": joints_encoder(fresh), "val_backbone": feature_encoder(fresh)}
            (runs / name).mkdir(parents=True, exist_ok=True)
        else:
            ckpt = train_run(cfg, runs / name, root, _log)
            encoders = {"val": run_encoder(ckpt)}
        if kind == "embedding" and name != "untrained":  # every readout: joints, pooled backbone, head
            model = load_checkpoint(ckpt).model
            assert isinstance(model, SkeletonEmbedder)
            encoders = {
                "val_joints": joints_encoder(model.backbone),
                "val_backbone": feature_encoder(model.backbone),
                "val_head": head_encoder(model),
            }
        found: dict[str, Any] = {"overrides": over}
        for key, enc in encoders.items():
            vecs = bank.vectors(enc, keep)
            found[key] = {
                str(k): closed_set(vecs, bank, draw_episodes(bank, unseen, k, draws, 500 + k, None, None))
                for k in SHOTS
            }
            _log(
                f"[select] {name} {key}: "
                + ", ".join(
                    f"{k}-shot {100 * v['mean']:.1f} ± {100 * v['std']:.1f}" for k, v in found[key].items()
                )
            )
        _save(runs / name / "val.json", found)
    result = {
        "split": "cal",
        "unseen": unseen,
        "draws": draws,
        "variants": {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/val.json"))},
    }
    _save(out / "select.json", result)
    return result


def mirrored(encoder: Encoder, layout: str) -> Encoder:
    """Test-time mirroring: each window's vector averaged with its left/right mirror's (x negated,
    paired joints swapped), normalised."""
    from skeleton.layouts import get_layout

    perm = np.arange(get_layout(layout).num_joints)
    for a, b in get_layout(layout).mirror_pairs:
        perm[a], perm[b] = b, a

    def enc(w: np.ndarray) -> np.ndarray:
        m = w[..., perm].copy()
        m[:, 0] *= -1
        return normalize(encoder(w) + encoder(m))

    return enc


def nearest_example(vecs: np.ndarray, bank: ClipBank, episodes: list[Episode]) -> dict[str, Any]:
    """``closed_set`` with the nearest single example instead of the nearest prototype (k-NN, k=1)."""
    acc = []
    for ep in episodes:
        actions = np.array([a for a, idx in ep.support.items() for _ in idx])
        examples = normalize(np.concatenate([vecs[idx] for idx in ep.support.values()]))
        pred = actions[(normalize(vecs[ep.queries]) @ examples.T).argmax(axis=1)]
        acc.append(float((pred == bank.actions[ep.queries]).mean()))
    return {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "draws": len(acc)}


def select_readout(out: Path, root: Path, draws: int, split_names: Sequence[int | str]) -> dict[str, Any]:
    """The readout of a trained embedding, chosen on training subjects only: every split's unseen
    actions, each draw enrolling from three of subjects 1,3,5,7 and querying the fourth (as
    ``select``); the uncentred joint readout, the centred one (the model's output since this
    choice), test-time mirroring, the nearest example instead of the prototype, and the ensemble of
    the centred readout where its members are trained (``ensemble_choice``; with the ensemble's
    softmax scale, temperature scaling, and its max-cosine "unknown" threshold, Youden's J with about
    half of each split's unseen actions enrolled, on the splits measured in this call). Splits
    measured before with the same draws are kept, so splits can be added as their members finish."""
    bank = ClipBank.load(root, split_config("cal", "embedding"))
    path = out / "select-readout.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    kept = earlier["splits"] if earlier.get("draws") == draws else {}
    result: dict[str, Any] = {"draws": draws, "splits": kept}
    pooled: list[tuple[np.ndarray, list[Episode]]] = []
    open_known: list[np.ndarray] = []
    open_unknown: list[np.ndarray] = []
    for split in (str(s) for s in split_names):
        cfg = split_config(split, "embedding")
        ckpt = out / split / "embedding" / "checkpoint.pt"
        unseen = unseen_actions(split)
        keep = np.isin(bank.actions, unseen) & np.isin(bank.subjects, TRAIN_SUBJECTS)
        plain = joints_encoder(backbone_of(ckpt, cfg))
        single = centred_embedding(ckpt, bank, base_actions(split))
        centred = bank.vectors(embedder_encoder(single), keep)
        vecs = {"uncentred": bank.vectors(plain, keep), "centred": centred,
                "mirrored": bank.vectors(mirrored(plain, cfg.input.layout), keep)}
        members = ensemble_members(out, split)
        if members:  # the ensemble, and each extra member alone (how far seeds and recipes differ)
            each = centred_members(members, bank, base_actions(split), {ckpt: single})
            vecs["ensemble"] = bank.vectors(embedder_encoder(EmbeddingEnsemble(each)), keep)
            for ckpt_k, member in zip(members[1:], each[1:], strict=True):
                vecs[f"centred, {ckpt_k.parent.name}"] = bank.vectors(embedder_encoder(member), keep)
        found: dict[str, Any] = {}
        for k in SHOTS:
            eps = draw_episodes(bank, unseen, k, draws, 500 + k, None, None)
            for name, v in vecs.items():
                found.setdefault(name, {})[str(k)] = closed_set(v, bank, eps)
            found.setdefault("centred, nearest example", {})[str(k)] = nearest_example(centred, bank, eps)
            if "ensemble" in vecs:  # the ensemble's served softmax(s x cosine): temperature scaling
                pooled.append((vecs["ensemble"], eps))
                # and its max-cosine "unknown" on Kinect skeletons: about half enrolled, as calibrate
                half = draw_episodes(bank, unseen, k, draws, 1000 + k, None, None, _known_count(len(unseen)))
                known, unknown = pooled_scores(vecs["ensemble"], bank, half)
                open_known.append(known)
                open_unknown.append(unknown)
        result["splits"][split] = found
        _log(f"[readout] {split}: " + ", ".join(
            f"{n} {100 * r['1']['mean']:.1f} / {100 * r['5']['mean']:.1f}" for n, r in found.items()))
    result["ensemble_choice"] = ensemble_choice(result["splits"])
    if pooled and result["ensemble_choice"]:  # one value for the manifest: every split and shot pooled
        result["ensemble_choice"]["logit_scale"] = fit_logit_scale(bank, *pooled)
        known, unknown = np.concatenate(open_known), np.concatenate(open_unknown)
        result["ensemble_choice"]["max_cosine_threshold"] = youden_threshold(known, unknown)
        result["ensemble_choice"]["max_cosine_auroc"] = auroc(known, unknown)
    elif result["ensemble_choice"]:  # no ensemble measured now: keep what was fitted on the same splits
        before = earlier.get("ensemble_choice") or {}
        if kept and before.get("splits") == result["ensemble_choice"]["splits"]:
            for key in ("logit_scale", "max_cosine_threshold", "max_cosine_auroc"):
                if key in before:
                    result["ensemble_choice"][key] = before[key]
    _save(path, result)
    return result


def ensemble_choice(found: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The rule fixed before measuring (issue 17): the ensemble replaces the single centred
    embedding if, over the splits where both were validated (training subjects only), it raises the
    mean top-1 for both 1 and 5 shots. None when no split has an ensemble."""
    both = {k: r for k, r in found.items() if "ensemble" in r and "centred" in r}
    if not both:
        return None
    means = {
        m: {k: float(np.mean([r[m][k]["mean"] for r in both.values()])) for k in ("1", "5")}
        for m in ("centred", "ensemble")
    }
    wins = all(means["ensemble"][k] > means["centred"][k] for k in ("1", "5"))
    return {"splits": sorted(both), "mean_top1": means, "chosen": "ensemble" if wins else "centred"}


VARIANTS: dict[str, dict[str, Any]] = {
    "untrained": {},
    "classifier": {},
    "softmax": {"embedding.loss": "softmax"},
    "cosface": {"embedding.loss": "cosface"},
    "arcface": {"embedding.loss": "arcface", "embedding.margin": 0.3},
    "supcon": {"embedding.loss": "supcon"},
    "cosface+supcon": {"embedding.loss": "cosface+supcon"},
    "cosface+instance": {"embedding.loss": "cosface", "embedding.instance_weight": 1.0},
    "cosface-joints": {"embedding.loss": "cosface", "embedding.head_input": "joints"},
    "supcon+instance": {"embedding.loss": "supcon", "embedding.instance_weight": 1.0},
}


METHODS = {
    "embedding-ensemble": "embedding, ensemble (3 recipes x 3 seeds)",
    "embedding": "embedding",
    "classifier": "classifier features",
    "untrained": "untrained network",
}
READOUTS = {
    "embedding-uncentred": "embedding, uncentred",
    "embedding-pooled": "embedding, pooled",
    "classifier-joints": "classifier, joint readout",
    "untrained-joints": "untrained, joint readout",
}


def _pm(v: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not v:
        return "-"
    return f"{scale * v['mean']:.{digits}f} ± {scale * v['std']:.{digits}f}"


def _names(actions: Sequence[int]) -> str:
    return ", ".join(str(a) for a in actions)


def summary(out: Path) -> dict[str, Any]:
    """Compact numbers for a manifest's metrics (``python -m export onnx --extra-metrics``)."""
    res = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/fewshot.json"))}

    def mean(v: dict[str, Any]) -> float:
        return round(float(v["mean"]), 4)

    few = {
        k: {m: {s: mean(r["few_shot"][m][s]) for s in ("1", "5")} for m in METHODS if m in r["few_shot"]}
        for k, r in res.items()
    }
    unknown = {
        k: {
            m: {
                s: {
                    "auroc": mean(o["auroc"]),
                    "coverage": mean(o["coverage"]),
                    "unknown_rejected": mean(o["unknown_rejected"]),
                }
                for s, o in r["open_set"][m].items()
                if "coverage" in o
            }
            for m in METHODS
            if m in r.get("open_set", {})
        }
        for k, r in res.items()
        if r.get("open_set")
    }
    return {
        "few_shot": {
            "protocol": "UTD-MHAD, unseen actions enrolled from subjects 1,3,5,7, queries = "
            "every clip of subjects 2,4,6,8; mean top-1 over draws (docs/fewshot.md)",
            "splits": few,
        },
        "unknown": {
            "protocol": "same-kind unseen actions: about half enrolled, the rest unknown; "
            "mean over draws at the manifest threshold",
            "splits": unknown,
        },
    }


def report(out: Path) -> str:
    """Markdown tables of every finished measurement under ``out`` (docs/fewshot.md copies them)."""
    res = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/fewshot.json"))}
    order = [k for k in splits() if k in res]
    lines = [
        "### Few-shot top-1 on unseen actions (7-way; test subjects 2,4,6,8; mean ± std over draws, %)",
        "",
        "| split | unseen actions | "
        + " | ".join(f"{m} 1-shot | {m} 5-shot" for m in METHODS.values())
        + " |",
        "|---|---|" + "---|---|" * len(METHODS),
    ]
    for k in (k for k in order if k != "all"):
        r = res[k]
        lines.append(
            f"| {k} | {_names(r['unseen'])} | "
            + " | ".join(
                f"{_pm(r['few_shot'].get(m, {}).get('1'))} | {_pm(r['few_shot'].get(m, {}).get('5'))}"
                for m in METHODS
            )
            + " |"
        )
    lines += [
        "",
        "Where the gain comes from (same splits and draws): the embedding's backbone pooled like the "
        "baselines, and the baselines' backbones read out like the embedding (%):",
        "",
        "| split | " + " | ".join(f"{m} 1-shot | {m} 5-shot" for m in READOUTS.values()) + " |",
        "|---|" + "---|---|" * len(READOUTS),
    ]
    for k in (k for k in order if k != "all"):
        r = res[k]
        lines.append(
            f"| {k} | "
            + " | ".join(
                f"{_pm(r['few_shot'].get(m, {}).get('1'))} | {_pm(r['few_shot'].get(m, {}).get('5'))}"
                for m in READOUTS
            )
            + " |"
        )
    if "all" in res:
        r = res["all"]
        lines += [
            "",
            "### 27-action few-shot (embedding trained on all 27 actions, subjects 1,3,5,7; 27-way, %)",
            "",
            "| method | 1-shot | 5-shot |",
            "|---|---|---|",
        ]
        lines += [
            f"| {label} | {_pm(r['few_shot'][m]['1'])} | {_pm(r['few_shot'][m]['5'])} |"
            for m, label in {**METHODS, **READOUTS}.items()
            if m in r["few_shot"]
        ]
        lines.append(
            f"| supervised classifier (27 outputs), same windows | {100 * r['supervised_top1']:.1f} | |"
        )
    lines += [
        "",
        "### Unknown among the same kind of action (enrol about half of a split's unseen arm gestures "
        "or leg/whole-body actions, the rest must be unknown; %, AUROC x100)",
        "",
        "| split | actions | method | shots | AUROC | coverage | unknown rejected | open-set accuracy | "
        "top-1 of enrolled |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in order:
        r = res[k]
        for m, label in METHODS.items():
            for shots in ("1", "5"):
                o = r.get("open_set", {}).get(m, {}).get(shots)
                if o:
                    lines.append(
                        f"| {k} | {_names(r['same_kind'])} | {label} | {shots} | {_pm(o['auroc'])} | "
                        f"{_pm(o.get('coverage'))} | {_pm(o.get('unknown_rejected'))} | "
                        f"{_pm(o.get('open_set_accuracy'))} | {_pm(o['closed_top1'])} |"
                    )
    cross = res.get("21-27", {}).get("open_set_cross_kind", {})
    if cross:
        lines += [
            "",
            "Easy case, split 21-27: enrol the 7 leg/whole-body actions, the 20 arm gestures are unknown:",
            "",
            "| method | shots | AUROC | coverage | unknown rejected |",
            "|---|---|---|---|---|",
        ]
        for m, label in METHODS.items():
            for shots in ("1", "5"):
                o = cross.get(m, {}).get(shots)
                if o:
                    lines.append(
                        f"| {label} | {shots} | {_pm(o['auroc'])} | {_pm(o.get('coverage'))} | "
                        f"{_pm(o.get('unknown_rejected'))} |"
                    )
    lines += [
        "",
        "### Unknown for the closed-vocabulary classifier (20 base actions known, the 7 unseen unknown; "
        "test subjects)",
        "",
        "| split | score | AUROC clips | AUROC windows | threshold | coverage | unknown rejected | "
        "open-set accuracy | top-1 (known) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in order:
        for score, c in res[k].get("classifier_unknown", {}).items():
            thr = c.get("threshold")
            extra = (
                f"{thr:.3f} | {100 * c['coverage']:.1f} | {100 * c['unknown_rejected']:.1f} | "
                f"{100 * c['open_set_accuracy']:.1f}"
                if thr is not None
                else "- | - | - | -"
            )
            lines.append(
                f"| {k} | {score} | {100 * c['auroc']:.1f} | {100 * c['window_auroc']:.1f} | {extra} | "
                f"{100 * c['closed_top1']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fewshot", description=__doc__.splitlines()[0])
    commands = ["run", "train", "select", "select-readout", "calibrate", "report", "splits", "centre"]
    ap.add_argument("command", choices=commands)
    ap.add_argument("--checkpoint", type=Path, help="centre: an embedding trained before the centred readout")
    ap.add_argument("--splits", nargs="*", default=["21-27", *(f"r{s}" for s in RANDOM_SPLIT_SEEDS), "all"])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="select: which objectives")
    ap.add_argument("--kinds", nargs="*", default=["embedding", "classifier"], help="train: what to train")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="train: the embedding's seeds")
    ap.add_argument("--recipes", nargs="*", default=[""], choices=list(RECIPES),
                    help="train: the embedding's recipes ('' the shipped one; RECIPES)")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of every trained config, e.g. --set optim.epochs=2 (repeatable)",
    )
    args = ap.parse_args(argv)
    from training.train import parse_overrides

    overrides = parse_overrides(args.set)
    torch.set_num_threads(1)
    root = args.data_dir or data_root()
    if args.command == "splits":
        print(json.dumps({k: {"unseen": v, "base": base_actions(k)} for k, v in splits().items()}, indent=1))
        return 0
    if args.command == "centre":  # fit its centre, take the recipe's calibrated scale and open-set rule
        centre = refit_centre(args.checkpoint, root, load_config(EMBEDDING_CONFIG))
        print(f"{args.checkpoint}: centre fitted (norm {float(np.linalg.norm(centre)):.4f})")
        return 0
    if args.command == "report":
        (args.out / "summary.json").write_text(json.dumps(summary(args.out), indent=1))
        print(report(args.out))
        return 0
    if args.command == "select-readout":
        select_readout(args.out, root, args.draws, [s for s in args.splits if s != "all"])
        return 0
    if args.command == "select":
        select(args.out, root, args.draws, {k: VARIANTS[k] for k in args.variants}, overrides)
        return 0
    if args.command == "train":  # only the training (e.g. several processes side by side)
        for split in args.splits:
            for kind in args.kinds:
                if split == "cal" and kind == "classifier":
                    cfg = split_config(split, kind, subjects=CALIBRATION_SUBJECTS, overrides=overrides)
                    train_run(cfg, args.out / split / "classifier-135", root, _log)
                elif kind == "embedding":
                    for recipe, seed in itertools.product(args.recipes, args.seeds):
                        run = member_dir(args.out, split, seed, recipe)
                        name = f"fewshot-{split}-{run.name}"
                        over = {**overrides, **RECIPES[recipe], "seed": seed, "name": name}
                        cfg = split_config(split, kind, overrides=over)
                        train_run(cfg, run, root, _log)
                elif split != "all":
                    train_run(
                        split_config(split, kind, overrides=overrides), args.out / split / kind, root, _log
                    )
        return 0
    bank = ClipBank.load(root, split_config("cal", "embedding"))
    thresholds = with_ensemble_threshold(calibrate(args.out, root, args.draws, bank, overrides), args.out)
    if args.command == "calibrate":
        print(json.dumps(thresholds, indent=1))
        return 0
    t0 = time.perf_counter()
    for split in args.splits:
        evaluate_split(split, args.out, root, args.draws, bank, thresholds, overrides)
    text = report(args.out)
    (args.out / "report.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(summary(args.out), indent=1))
    print(text)
    _log(f"measured in {time.perf_counter() - t0:.0f} s (training excluded when it was already done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
