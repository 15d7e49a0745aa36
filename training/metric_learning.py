"""Metric learning for the embedding model: windows -> unit vectors, same-action windows close together.

``python -m training.train --config configs/<name>-embedding.yaml`` lands here when the config has an
``embedding`` section. The model (``models.embedding.SkeletonEmbedder``) sees the service's windows:
each UTD-MHAD clip is a 30 fps stream cut by ``skeleton.clip.window_ends`` and
``skeleton.preprocess.prepare_window`` (the UTD classifier instead resamples whole clips), so an
example enrolled from a clip, a stream's recent seconds, and a query window all look like training
inputs. Augmentation is the repository's (``training.augment``: yaw/tilt, per-axis scale, joint
noise) plus speed and a random window position inside the clip.

Losses (``EmbeddingConfig.loss``): CosFace / ArcFace (normalised softmax with an additive cosine
/ angular margin; the class weights live in the loss, not in the exported model), supervised
contrastive (SupCon, Khosla et al. 2020), a sum of CosFace and SupCon, and plain softmax
cross-entropy on the head as the ablation. ``instance_weight`` adds an instance-discrimination term
(SimCLR's NT-Xent, written as SupCon with clip ids as labels: two augmented windows of a clip are
positives): it keeps information the base actions do not need, which unseen actions may. Batches
hold ``classes_per_batch`` classes with several windows each, so every anchor has positives (SupCon
needs them; the margin losses do not mind).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional as F

from models import count_flops, count_params
from models.embedding import SkeletonEmbedder, build_embedder, joint_readout
from models.ensemble import EmbeddingEnsemble
from models.stgcn import STGCNClassifier
from skeleton.clip import window_ends
from skeleton.layouts import get_layout
from skeleton.manifest import InputSpec
from skeleton.preprocess import prepare_window
from skeleton.prototypes import PrototypeSet, pool
from training.augment import add_noise, geometric, swap_limbs
from training.config import EmbeddingConfig, TrainConfig
from training.utd_mhad import FPS as UTD_FPS
from training.utd_mhad import LABELS as UTD_LABELS
from training.utd_mhad import UtdClip, load_utd_mhad

CHECKPOINT = "checkpoint.pt"
KIND = "embedding"


# ---------------------------------------------------------------------------------------------- data


def stream_windows(timestamps: np.ndarray, joints: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(W, C, L, V) windows of a timestamped joint stream on the service's schedule: the first
    ends one window after the first frame, then one every stride / fps; a shorter stream is one
    window ending at its last frame."""
    w = spec.window
    ends = window_ends(float(timestamps[0]), float(timestamps[-1]), w.seconds, w.stride / w.fps)
    return np.stack([prepare_window(timestamps, joints, spec, float(e)) for e in ends])


def utd_timestamps(clip: UtdClip) -> np.ndarray:
    return np.arange(clip.joints.shape[0], dtype=np.float64) / UTD_FPS


def utd_windows(clip: UtdClip, spec: InputSpec) -> np.ndarray:
    """The windows the service would cut from this clip played as a 30 fps stream."""
    return stream_windows(utd_timestamps(clip), clip.joints, spec)


class UtdWindowSet:
    """UTD-MHAD clips of some subjects and actions, sampled as augmented service windows."""

    def __init__(
        self, cfg: TrainConfig, data_root: Path, subjects: Sequence[int], clips: list[UtdClip] | None = None
    ) -> None:
        self.cfg = cfg
        self.layout = get_layout(cfg.input.layout)
        actions = cfg.dataset.classes or list(range(1, len(UTD_LABELS) + 1))
        self.actions = list(actions)
        index = {a: i for i, a in enumerate(actions)}
        pool_clips = clips if clips is not None else load_utd_mhad(data_root, set(subjects))
        self.clips = [c for c in pool_clips if c.subject in set(subjects) and c.action in index]
        self.labels = np.array([index[c.action] for c in self.clips], np.int64)
        self.label_names = [UTD_LABELS[a - 1] for a in actions]
        self.limb_swap = bool(cfg.embedding and cfg.embedding.limb_swap)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def num_classes(self) -> int:
        """The training classes: the actions, and with ``limb_swap`` each again with limbs swapped."""
        return len(self.actions) * (2 if self.limb_swap else 1)

    @property
    def item_labels(self) -> np.ndarray:
        """The class of each item ``window`` takes: the clips, then (``limb_swap``) the clips again,
        limbs swapped, as actions ``len(actions)`` on."""
        if not self.limb_swap:
            return self.labels
        return np.concatenate([self.labels, self.labels + len(self.actions)])

    def window(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """An augmented window of item ``i``: speed change, random position, geometry, noise."""
        clip, aug, spec = self.clips[i % len(self.clips)], self.cfg.augment, self.cfg.input
        t = utd_timestamps(clip)
        if aug.speed:
            t = t / rng.uniform(1 - aug.speed, 1 + aug.speed)
        first_end = float(t[0]) + spec.window.seconds
        end = float(t[-1]) if first_end >= t[-1] else float(rng.uniform(first_end, t[-1]))
        joints = swap_limbs(clip.joints, self.layout) if i >= len(self.clips) else clip.joints
        joints = geometric(joints, aug, rng, self.layout)
        return add_noise(prepare_window(t, joints, spec, end), aug.noise, rng)

    def batches(
        self, rng: np.random.Generator, batch_size: int, classes_per_batch: int, samples: int, views: int = 1
    ) -> list[np.ndarray]:
        """Clip indices, ``classes_per_batch`` classes x ``batch_size // classes_per_batch`` each; with
        ``views`` > 1 each chosen clip appears that many times in a row (differently augmented)."""
        labels = self.item_labels
        by_class = [np.flatnonzero(labels == k) for k in range(self.num_classes)]
        present = [k for k, idx in enumerate(by_class) if len(idx)]
        p = min(classes_per_batch, len(present))
        per = max(2, batch_size // p) // views
        out = []
        for _ in range(math.ceil(samples / (p * per * views))):
            chosen = rng.choice(present, size=p, replace=False)
            clips = [rng.choice(by_class[k], size=per, replace=len(by_class[k]) < per) for k in chosen]
            out.append(np.repeat(np.concatenate(clips), views))
        return out


# -------------------------------------------------------------------------------------------- losses


class MarginSoftmax(nn.Module):
    """CosFace (cos - m) or ArcFace (cos(theta + m)) logits times ``scale`` on unit embeddings."""

    def __init__(self, dim: int, num_classes: int, scale: float, margin: float, kind: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin, self.kind = scale, margin, kind

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        cos = z @ F.normalize(self.weight, dim=1).T
        onehot = F.one_hot(y, cos.shape[1]).bool()
        if self.kind == "arcface":
            theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
            target = torch.cos(theta + self.margin)
        else:
            target = cos - self.margin
        return F.cross_entropy(self.scale * torch.where(onehot, target, cos), y)


def supcon_loss(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on unit embeddings."""
    sim = z @ z.T / temperature
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    count = pos.sum(1)
    has = count > 0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has] / count[has]
    return per_anchor.mean()


class EmbeddingLoss(nn.Module):
    """The configured objective; holds the class weights that are not part of the exported model."""

    def __init__(self, cfg: EmbeddingConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.margin: nn.Module | None = None
        self.linear: nn.Module | None = None
        if cfg.loss in ("cosface", "arcface", "cosface+supcon"):
            kind = "arcface" if cfg.loss == "arcface" else "cosface"
            self.margin = MarginSoftmax(cfg.dim, num_classes, cfg.scale, cfg.margin, kind)
        elif cfg.loss == "softmax":
            self.linear = nn.Linear(cfg.dim, num_classes)

    def forward(self, model: SkeletonEmbedder, x: Tensor, y: Tensor, clip: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, unit embeddings); ``clip`` identifies each window's clip (the instance term)."""
        raw = model.raw(x)
        z = F.normalize(raw, dim=1)
        loss = z.new_zeros(())
        if self.linear is not None:
            loss = loss + F.cross_entropy(self.linear(raw), y)
        if self.margin is not None:
            loss = loss + self.margin(z, y)
        if "supcon" in self.cfg.loss:
            weight = self.cfg.supcon_weight if self.margin is not None else 1.0
            loss = loss + weight * supcon_loss(z, y, self.cfg.temperature)
        if self.cfg.instance_weight > 0:
            loss = loss + self.cfg.instance_weight * supcon_loss(z, clip, self.cfg.temperature)
        return loss, z


# ---------------------------------------------------------------------------------------- encoders

Encoder = Callable[[np.ndarray], np.ndarray]


@torch.no_grad()
def encode(fn: Callable[[Tensor], Tensor], windows: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, C, T, V) windows -> (N, D) float32 vectors, in eval mode batches."""
    out = [
        fn(torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size]))).numpy()
        for i in range(0, len(windows), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def embedder_encoder(model: SkeletonEmbedder | EmbeddingEnsemble) -> Encoder:
    """An embedding's (or its seed ensemble's) output vectors."""
    model.eval()
    return lambda w: encode(model, w)


def head_encoder(model: SkeletonEmbedder) -> Encoder:
    """An embedding model's normalised projection-head output (what its losses saw)."""
    model.eval()
    return lambda w: encode(lambda x: F.normalize(model.raw(x), dim=1), w)


def joints_encoder(model: STGCNClassifier) -> Encoder:
    """Any backbone's per-joint, two-half, multi-block readout (``models.embedding.joint_readout``)."""
    model.eval()
    return lambda w: encode(lambda x: F.normalize(joint_readout(model, x), dim=1), w)


def feature_encoder(model: STGCNClassifier) -> Encoder:
    """A classifier's pooled penultimate features (the few-shot baseline)."""
    model.eval()
    return lambda w: encode(model.forward_features, w)


def fit_centre(model: SkeletonEmbedder, windows: np.ndarray) -> None:
    """Set the model's output centre to the mean of its uncentred outputs over ``windows`` (its
    training windows; ``models.embedding`` says why)."""
    model.centre.zero_()
    model.centre.copy_(torch.from_numpy(embedder_encoder(model)(windows).mean(axis=0)))


def training_windows(cfg: TrainConfig, data_root: Path, clips: list[UtdClip] | None = None) -> np.ndarray:
    """Every service window of the config's training clips (its actions, its training subjects)."""
    train_set = UtdWindowSet(cfg, data_root, cfg.dataset.train_subjects, clips)
    return np.concatenate([utd_windows(c, cfg.input) for c in train_set.clips])


def refit_centre(checkpoint: Path, data_root: Path, recipe: TrainConfig | None = None) -> np.ndarray:
    """Fit the centre of a saved embedding on its own training windows and save it back (an
    embedding trained before the centred readout); returns the centre. With ``recipe``, its
    calibrated ``embedding.logit_scale`` and ``open_set`` rule (measured on centred vectors) replace
    the saved config's, so the export writes them into the manifest."""
    from training.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    assert isinstance(ck.model, SkeletonEmbedder)
    fit_centre(ck.model, training_windows(ck.config, data_root))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved["state_dict"] = ck.model.state_dict()
    if recipe is not None and recipe.embedding is not None:
        saved["config"]["embedding"]["logit_scale"] = recipe.embedding.logit_scale
        rule = recipe.open_set
        saved["config"]["open_set"] = None if rule is None else rule.model_dump(mode="json")
    torch.save(saved, checkpoint)
    return ck.model.centre.numpy()


def pooled_vectors(encoder: Encoder, clip_windows: Sequence[np.ndarray]) -> np.ndarray:
    """(clips, D): each clip's window vectors pooled (``skeleton.prototypes.pool``)."""
    counts = [len(w) for w in clip_windows]
    flat = encoder(np.concatenate(clip_windows))
    bounds = np.cumsum([0, *counts])
    return np.stack([pool(flat[a:b]) for a, b in itertools.pairwise(bounds)])


def prototype_accuracy(
    train_vecs: np.ndarray, train_labels: np.ndarray, test_vecs: np.ndarray, test_labels: np.ndarray
) -> float:
    """Top-1 of the nearest class prototype (all training clips of a class enrolled)."""
    names = sorted(set(train_labels.tolist()))
    protos = PrototypeSet.from_examples({str(k): train_vecs[train_labels == k] for k in names})
    pred = np.array(names)[protos.similarities(test_vecs).argmax(1)]
    return float((pred == test_labels).mean())


# ------------------------------------------------------------------------------------------ training


def build_embedding_model(cfg: TrainConfig) -> SkeletonEmbedder:
    e = cfg.embedding
    if e is None:
        raise ValueError("config has no embedding section")
    return build_embedder(cfg.model.arch, cfg.input.layout, e.dim, e.head, e.output, e.head_input,
                          **cfg.model.kwargs)


def train_embedding(
    cfg: TrainConfig,
    out_dir: Path,
    data_root: Path,
    log: Callable[[str], None] = print,
    max_train: int | None = None,
    plots: bool = True,
    clips: list[UtdClip] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` (with an ``embedding`` section) and write the run directory; returns the metrics.

    With test subjects, every ``eval_every`` epochs the test clips are classified by nearest
    prototype (every training clip of a class enrolled): a closed-set check of the embedding.
    """
    from training.plots import plot_curves
    from training.train import lr_lambda, seed_everything

    e = cfg.embedding
    if e is None:
        raise ValueError("train_embedding needs a config with an embedding section")
    if cfg.dataset.name != "utd_mhad":
        raise ValueError("embedding training reads UTD-MHAD (dataset.name: utd_mhad)")
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    t_load = time.perf_counter()
    if clips is None:
        clips = load_utd_mhad(data_root, {*cfg.dataset.train_subjects, *cfg.dataset.test_subjects})
    train_set = UtdWindowSet(cfg, data_root, cfg.dataset.train_subjects, clips)
    if max_train is not None:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_set))[:max_train])
        train_set.clips = [train_set.clips[int(i)] for i in keep]
        train_set.labels = train_set.labels[keep]
    test_set = UtdWindowSet(cfg, data_root, cfg.dataset.test_subjects, clips)
    eval_train = [utd_windows(c, cfg.input) for c in train_set.clips]
    eval_test = [utd_windows(c, cfg.input) for c in test_set.clips]
    log(
        f"{cfg.name}: {len(train_set)} train / {len(test_set)} test clips, {len(train_set.actions)} classes, "
        f"loss {e.loss} (loaded in {time.perf_counter() - t_load:.1f} s)"
    )
    model = build_embedding_model(cfg)
    criterion = EmbeddingLoss(e, train_set.num_classes)
    v = train_set.layout.num_joints
    input_shape = (cfg.input.channels, cfg.input.window.length, v)
    params, flops = count_params(model), count_flops(model, input_shape)
    log(
        f"embedding {cfg.model.arch} -> {e.dim}: {params / 1e6:.3f} M params, "
        f"{flops / 1e9:.3f} GFLOPs per window"
    )
    o = cfg.optim
    opt = torch.optim.SGD(
        [*model.parameters(), *criterion.parameters()],
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
    )
    samples = o.samples_per_epoch or len(train_set)
    views = 2 if e.instance_weight > 0 else 1
    steps = len(train_set.batches(np.random.default_rng(0), o.batch_size, e.classes_per_batch, samples,
                                  views))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.epochs, o.warmup_epochs, steps))
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for epoch in range(1, o.epochs + 1):
        model.train()
        criterion.train()
        total, correct, seen = 0.0, 0, 0
        for idx in train_set.batches(rng, o.batch_size, e.classes_per_batch, samples, views):
            x = torch.from_numpy(np.stack([train_set.window(int(i), rng) for i in idx]))
            y = torch.from_numpy(train_set.item_labels[idx])
            loss, z = criterion(model, x, y, torch.from_numpy(idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # in-batch nearest neighbour (leave one out): a loss-free accuracy
                sim = (z @ z.T).fill_diagonal_(-2.0)
                correct += int((y[sim.argmax(1)] == y).sum())
            total += loss.item() * len(idx)
            seen += len(idx)
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": round(opt.param_groups[0]["lr"], 6),
            "train_loss": round(total / max(seen, 1), 5),
            "train_top1": round(correct / max(seen, 1), 4),
            "test_loss": None,
            "test_top1": None,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if eval_test and (epoch % o.eval_every == 0 or epoch == o.epochs):
            enc = embedder_encoder(model)
            row["test_top1"] = round(
                prototype_accuracy(
                    pooled_vectors(enc, eval_train),
                    train_set.labels,
                    pooled_vectors(enc, eval_test),
                    test_set.labels,
                ),
                4,
            )
        history.append(row)
        log(" ".join(f"{k}={val}" for k, val in row.items() if val is not None))
    model.eval()
    fit_centre(model, np.concatenate(eval_train))
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "dataset": cfg.dataset.name,
        "arch": cfg.model.arch,
        "kind": KIND,
        "loss": e.loss,
        "dim": e.dim,
        "protocol": (
            f"embedding, service windows of 30 fps clips: train subjects "
            f"{cfg.dataset.train_subjects}, actions {train_set.actions}"
        ),
        "prototype_top1": history[-1]["test_top1"],
        "params": params,
        "flops": flops,
        "input_shape": list(input_shape),
        "epochs": o.epochs,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "num_train": len(train_set),
        "num_test": len(test_set),
        "torch_threads": torch.get_num_threads(),
        "history": history,
    }
    torch.save(
        {
            "kind": KIND,
            "state_dict": model.state_dict(),
            "config": cfg.model_dump(mode="json"),
            "labels": train_set.label_names,
            "label_groups": {},
            "metrics": metrics,
        },
        out_dir / CHECKPOINT,
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if plots:
        plot_curves(history, out_dir / "curves.png", f"{cfg.name} ({e.loss})")
    return metrics
