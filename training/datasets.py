"""Datasets as the trainer sees them: augmented training inputs, fixed test inputs, evaluation.

Every input is produced by ``skeleton.preprocess`` (``prepare_clip`` / ``prepare_window``), the
code the service runs, after augmentation of the raw canonical joints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.layouts import get_layout
from skeleton.paths import missing_data
from skeleton.preprocess import prepare_clip
from training.augment import add_noise, corrupt, geometric, temporal_crop
from training.config import TrainConfig
from training.metrics import classification_metrics
from training.utd_mhad import LABELS as UTD_LABELS
from training.utd_mhad import UtdClip, load_utd_mhad


class ActionDataset(ABC):
    """Common interface of the training sets."""

    labels: list[str]
    label_groups: dict[str, list[str]]
    protocol: str
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray

    @abstractmethod
    def train_input(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """(C, T, V) input of training sample ``index``; ``rng`` None means no augmentation."""

    @abstractmethod
    def restrict_train(self, keep: np.ndarray) -> None:
        """Keep only training samples ``keep`` (quick tests on a subset)."""

    @abstractmethod
    def evaluate(self, predict_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
        """Test metrics; ``predict_fn`` maps (N, C, T, V) inputs to (N, K) probabilities."""

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])


class UtdMhadDataset(ActionDataset):
    """UTD-MHAD, whole trimmed clips resampled to the window length (``prepare_clip``)."""

    def __init__(self, cfg: TrainConfig, data_root: Path) -> None:
        self.cfg = cfg
        self.layout = get_layout(cfg.input.layout)
        if self.layout.name != "kinect20":
            raise ValueError("UTD-MHAD skeletons are Kinect-20: use input.layout kinect20")
        ds = cfg.dataset
        actions = ds.classes or list(range(1, len(UTD_LABELS) + 1))
        index = {a: i for i, a in enumerate(actions)}  # action -> label index (a subset is renumbered)
        self.labels = [UTD_LABELS[a - 1] for a in actions]
        self.label_groups = {}
        self.protocol = (f"cross-subject, whole clip: train subjects {ds.train_subjects}, "
                         f"test subjects {ds.test_subjects}" + (f", actions {actions}" if ds.classes else ""))
        self.train_clips: list[UtdClip] = [c for c in load_utd_mhad(data_root, set(ds.train_subjects))
                                           if c.action in index]
        self.test_clips: list[UtdClip] = ([c for c in load_utd_mhad(data_root, set(ds.test_subjects))
                                           if c.action in index] if ds.test_subjects else [])
        self.train_labels = np.array([index[c.action] for c in self.train_clips], np.int64)
        self.test_labels = np.array([index[c.action] for c in self.test_clips], np.int64)
        empty = np.zeros((0, 3, cfg.input.window.length, self.layout.num_joints), np.float32)
        self.test_inputs = (np.stack([prepare_clip(c.joints, cfg.input) for c in self.test_clips])
                            if self.test_clips else empty)

    def train_input(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        joints = self.train_clips[index].joints
        if rng is None:
            return prepare_clip(joints, self.cfg.input)
        aug = self.cfg.augment
        joints = temporal_crop(joints, aug.crop_min, rng)
        joints = corrupt(geometric(joints, aug, rng, self.layout), aug.corrupt, rng, self.layout)
        return add_noise(prepare_clip(joints, self.cfg.input), aug.noise, rng)

    def restrict_train(self, keep: np.ndarray) -> None:
        self.train_clips = [self.train_clips[int(i)] for i in keep]
        self.train_labels = self.train_labels[keep]

    def evaluate(self, predict_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
        pred = predict_fn(self.test_inputs).argmax(axis=1)
        return classification_metrics(self.test_labels, pred, self.labels)


def build_dataset(cfg: TrainConfig, data_root: Path, repo_root: Path) -> ActionDataset:
    if cfg.dataset.name == "utd_mhad":
        return UtdMhadDataset(cfg, data_root)
    from training.upfall import UpFallDataset

    return UpFallDataset(cfg, repo_root / cfg.dataset.cache_dir)


def real_windows(cfg: TrainConfig, data_root: Path, repo_root: Path, count: int = 32) -> np.ndarray:
    """``count`` model inputs prepared from real recordings, for export parity checks."""
    if cfg.dataset.name == "utd_mhad":
        from training.utd_mhad import read_skeleton, skeleton_files

        files = skeleton_files(data_root)
        if not files:
            raise missing_data("UTD-MHAD skeleton files (utd_mhad/Skeleton/*.mat)", data_root)
        pick = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
        return np.stack([prepare_clip(read_skeleton(files[i]), cfg.input) for i in pick])
    from training.upfall import sample_windows

    return sample_windows(cfg, repo_root / cfg.dataset.cache_dir, count)
