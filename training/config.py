"""Training configuration (YAML): model, dataset/protocol, input spec, augmentation, optimiser.

The ``input`` section *is* a ``skeleton.manifest.InputSpec``: it is copied unchanged into the
exported manifest, so the service prepares windows exactly as training did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from skeleton.manifest import FallRuleSpec, InputSpec, OpenSetSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    arch: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DatasetConfig(_Strict):
    name: Literal["utd_mhad", "upfall", "folder"]
    # folder: your own clips, the samples.csv `python -m training` writes (training/folder.py).
    samples: str = ""
    # UTD-MHAD cross-subject protocol.
    # Only these actions (1-based; empty = all), e.g. a few-shot split's base classes. UTD-MHAD drops
    # the others (labels renumbered); UP-Fall keeps its 11 labels and only trains on these (the
    # held-out activities of its "unknown" folds, training.upfall_fewshot).
    classes: list[int] = Field(default_factory=list)
    train_subjects: list[int] = Field(default_factory=lambda: [1, 3, 5, 7])
    test_subjects: list[int] = Field(default_factory=lambda: [2, 4, 6, 8])
    # UP-Fall: trials to train / test on (an empty test list trains the shipped model on all data).
    train_trials: list[int] = Field(default_factory=lambda: [1])
    test_trials: list[int] = Field(default_factory=lambda: [2])
    cameras: list[int] = Field(default_factory=lambda: [1, 2])
    cache_dir: str = "cache/skeletons/upfall"
    # Fall clips: windows whose span holds the detected fall moment get the fall label; the
    # moment must lie inside [fall_margin_s, window length - fall_margin_s] of the window.
    fall_margin_s: float = 0.25
    # Windows ending > pre_fall_gap_s before the fall: excluded or 'standing'; windows starting
    # > post_fall_gap_s after it (the person has settled on the floor): excluded or 'laying'.
    # Windows in between (part of the fall, too little of it) are always excluded.
    pre_fall: Literal["exclude", "standing"] = "exclude"
    pre_fall_gap_s: float = 0.5
    post_fall: Literal["exclude", "laying"] = "exclude"
    post_fall_gap_s: float = 1.0
    # Training windows may start up to this fraction of a window before the actor's first sighting
    # (the first pose is held, as prepare_window does): falls early in a clip get more examples.
    train_lead_in: float = 0.5


class CorruptConfig(_Strict):
    """Damaged-skeleton augmentation (``skeleton.corrupt``) on the raw joints, before the shared
    preprocessing: each kind hits a training sample with probability ``p``, at a level drawn
    uniformly up to its maximum. All off by default."""

    p: float = Field(default=0.0, ge=0, le=1)
    joints: float = Field(default=0.0, ge=0, lt=1)  # fraction of joints dropped per frame, at most
    limb: bool = False  # drop one limb (drawn at random)
    frames: float = Field(default=0.0, ge=0, lt=1)  # fraction of frames dropped, at most
    noise: float = Field(default=0.0, ge=0)  # positional noise, trunk lengths, at most


class AugmentConfig(_Strict):
    yaw_deg: float = 0.0  # random rotation about the vertical axis, +-
    tilt_deg: float = 0.0  # random rotation about the two horizontal axes, +-
    scale: float = 0.0  # independent per-axis scale factor in 1 +- scale
    crop_min: float = 1.0  # whole-clip protocol: keep a random contiguous >= crop_min of the clip
    speed: float = 0.0  # windows: play the stream at 1 +- speed
    shift_s: float = 0.0  # windows: jitter the window's end time by +- shift_s
    noise: float = 0.0  # Gaussian joint noise after normalisation (units of body size)
    mirror: bool = False  # left/right flip; off for UTD-MHAD (right-handed actions)
    bones: float = 0.0  # body proportions: each bone's length times 1 +- bones (left and right alike)
    corrupt: CorruptConfig = Field(default_factory=CorruptConfig)


class OptimConfig(_Strict):
    epochs: int = 60
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.0
    # Windows per epoch drawn class-balanced (UP-Fall); 0 = every training sample once.
    samples_per_epoch: int = 0
    balanced: bool = False
    eval_every: int = 1


class ClipRuleConfig(_Strict):
    """Clip-level decision (skeleton.clip); only meaningful with a 'fall' label group."""

    fall_threshold: float = 0.5
    min_fall_windows: int = 1


class EmbeddingConfig(_Strict):
    """Metric learning (``training.metric_learning``): the model outputs a unit vector per window."""

    dim: int = 128
    head: Literal["linear", "mlp"] = "mlp"
    # What the model outputs (normalised; models.embedding): per-joint features of several blocks
    # ("joints"), the backbone's pooled features, or the head the losses see.
    output: Literal["joints", "backbone", "head"] = "joints"
    # What the head (and so the loss) sees: globally pooled features, or the joint readout.
    head_input: Literal["pooled", "joints"] = "pooled"
    # cosface / arcface: normalised softmax with an additive cosine / angular margin (scale, margin);
    # supcon: supervised contrastive (temperature); "+" combines a margin loss with supcon
    # (supcon_weight); softmax: plain cross-entropy on the head (the ablation).
    loss: Literal["cosface", "arcface", "supcon", "cosface+supcon", "softmax"] = "cosface"
    scale: float = 16.0
    margin: float = 0.2
    temperature: float = 0.1
    supcon_weight: float = 1.0
    # + instance discrimination (two views of each clip are positives; training.metric_learning)
    instance_weight: float = 0.0
    # Batches hold classes_per_batch classes x (batch_size / classes_per_batch) windows each.
    classes_per_batch: int = 8
    # Every training action also as a second action with arms and legs swapped
    # (training.augment.swap_limbs): same clips and epoch length, twice the classes.
    limb_swap: bool = False
    # Served probabilities are softmax(logit_scale * cosine) over the enrolled labels: a temperature
    # fitted on training subjects (training.fewshot calibrate); None: the loss's own scale.
    logit_scale: float | None = None


class TrainConfig(_Strict):
    name: str
    version: str = "1.0.0"
    description: str = ""
    seed: int = 0
    threads: int = 2
    model: ModelConfig
    dataset: DatasetConfig
    input: InputSpec
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    clip_rule: ClipRuleConfig = Field(default_factory=ClipRuleConfig)
    # Set: train an embedding (python -m training.train dispatches to training.metric_learning).
    embedding: EmbeddingConfig | None = None
    # "unknown" rule copied into the exported manifest (chosen by training.fewshot, docs/fewshot.md).
    open_set: OpenSetSpec | None = None
    # Confirmed fall events (skeleton.falls), copied into the manifest like ``input``.
    fall_rule: FallRuleSpec = Field(default_factory=FallRuleSpec)


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` maps dotted keys (``optim.epochs``) to values."""
    return TrainConfig.model_validate(with_overrides(yaml.safe_load(path.read_text()), overrides))


def with_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` (a config as a dict, changed in place) with dotted keys (``optim.epochs``) set."""
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data
