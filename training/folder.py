"""Your own clips as a training set (``dataset.name: folder``): the samples.csv that
``python -m training`` writes, with each sample's cached skeletons.

Each sample is the actor's (primary) track cut to the sample's [start, end]. Windows are cut as
the service cuts them (`skeleton.clip.window_ends`, `skeleton.preprocess.prepare_window`), every
window labelled with its sample's label; training windows are denser (every 0.125 s) and
augmented. Test metrics: every served window of the held-out samples (window top-1) and the
clip decision `skeleton.clip.decide` that ``/recognize`` answers with (clip top-1), each with a
per-class report and a confusion matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.clip import decide, window_ends
from skeleton.layouts import get_layout
from skeleton.preprocess import prepare_window, sequence_to_layout
from training.augment import augmented_window
from training.config import TrainConfig
from training.datasets import ActionDataset
from training.metrics import classification_metrics, per_class_report
from training.samples import Sample, labels_of, read_csv
from training.skeleton_cache import load_clip

log = logging.getLogger("training.folder")

TRAIN_HOP_S = 0.125  # training windows every this many seconds (denser than the served stride)


@dataclass(frozen=True)
class Segment:
    """The actor's joints over one sample, in the model's layout (NaN where the actor was missed)."""

    name: str
    label: int
    timestamps: np.ndarray  # (T,)
    joints: np.ndarray  # (T, V, 3)
    seen: np.ndarray  # (T,) bool

    def window_ends(self, cfg: TrainConfig, hop_s: float | None = None, lead_in: float = 0.0) -> np.ndarray:
        """The service's window schedule over the actor's sightings (training: finer, with lead-in)."""
        if not self.seen.any():
            return np.zeros(0)
        t, w = self.timestamps[self.seen], cfg.input.window
        return window_ends(
            float(t[0]) - lead_in * w.seconds, float(t[-1]), w.seconds, hop_s or w.stride / w.fps
        )


def load_segments(samples: Sequence[Sample], cfg: TrainConfig, labels: Sequence[str]) -> list[Segment]:
    """Segments of the samples whose actor was found (the others are logged and left out)."""
    out = []
    for s in samples:
        if s.skeletons is None:
            raise ValueError(f"{s.name}: no skeletons; run python -m training to extract them")
        clip = load_clip(s.skeletons)
        track = clip.primary_track
        if track is None:
            log.warning("%s: nobody found, left out", s.name)
            continue
        t = track.timestamps
        keep = (t >= s.start) & (t <= (np.inf if s.end is None else s.end))
        joints = sequence_to_layout(track, cfg.input, float(clip.height))[keep]
        seen = np.isfinite(joints).all(axis=(1, 2))
        if not seen.any():
            log.warning("%s: nobody found between %g and %s s, left out", s.name, s.start, s.end)
            continue
        out.append(Segment(s.name, list(labels).index(s.label), t[keep], joints, seen))
    return out


class FolderDataset(ActionDataset):
    """Sliding windows of the samples' actors; the split is the samples.csv's ``split`` column."""

    def __init__(self, cfg: TrainConfig, samples_csv: Path) -> None:
        self.cfg = cfg
        self.layout = get_layout(cfg.input.layout)
        samples = read_csv(samples_csv)
        self.labels = labels_of(samples)
        self.label_groups = {}
        train = [s for s in samples if s.split != "test"]
        test = [s for s in samples if s.split == "test"]
        self.protocol = (
            f"your clips ({samples_csv}): {len(train)} training / {len(test)} held-out samples, "
            "held out by group, sliding windows + skeleton.clip rule"
        )
        self.train_segments = load_segments(train, cfg, self.labels)
        self.test_segments = load_segments(test, cfg, self.labels)
        lead_in = cfg.dataset.train_lead_in
        self.train_items = [
            (i, float(end), seg.label)
            for i, seg in enumerate(self.train_segments)
            for end in seg.window_ends(cfg, TRAIN_HOP_S, lead_in)
        ]
        self.train_labels = np.array([item[2] for item in self.train_items], np.int64)
        inputs, labels, owners, ends = [], [], [], []
        for i, seg in enumerate(self.test_segments):
            for end in seg.window_ends(cfg):
                inputs.append(prepare_window(seg.timestamps, seg.joints, cfg.input, float(end)))
                labels.append(seg.label)
                owners.append(i)
                ends.append(float(end))
        shape = (0, cfg.input.channels, cfg.input.window.length, self.layout.num_joints)
        self.test_inputs = np.stack(inputs) if inputs else np.zeros(shape, np.float32)
        self.test_labels = np.array(labels, np.int64)
        self.test_owner = np.array(owners, np.int64)
        self.test_ends = np.array(ends, np.float64)

    def train_input(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        i, end, _ = self.train_items[index]
        seg = self.train_segments[i]
        if rng is None:
            return prepare_window(seg.timestamps, seg.joints, self.cfg.input, end)
        return augmented_window(
            seg.timestamps, seg.joints, end, self.cfg.input, self.cfg.augment, rng, self.layout
        )

    def restrict_train(self, keep: np.ndarray) -> None:
        self.train_items = [self.train_items[int(i)] for i in keep]
        self.train_labels = self.train_labels[keep]

    def evaluate(self, predict_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
        """Window and clip top-1, per-class reports, confusion matrices, each held-out clip's answer."""
        probs = predict_fn(self.test_inputs)
        window = classification_metrics(self.test_labels, probs.argmax(1), self.labels)
        clips, predicted = [], []
        for i, seg in enumerate(self.test_segments):
            sel = self.test_owner == i
            d = decide(probs[sel], self.test_ends[sel])
            predicted.append(d.label)
            clips.append(
                {
                    "clip": seg.name,
                    "true": self.labels[seg.label],
                    "pred": self.labels[d.label],
                    "confidence": round(d.confidence, 4),
                    "windows": int(sel.sum()),
                }
            )
        truth = np.array([seg.label for seg in self.test_segments], np.int64)
        clip = classification_metrics(truth, np.array(predicted, np.int64), self.labels)
        return {
            "clip_top1": clip["top1"],
            "num_clips": clip["num_samples"],
            "clip_per_class_accuracy": clip["per_class_accuracy"],
            "clip_report": per_class_report(clip["confusion_matrix"], self.labels),
            "clip_confusion_matrix": clip["confusion_matrix"],
            "window_top1": window["top1"],
            "num_windows": window["num_samples"],
            "window_per_class_accuracy": window["per_class_accuracy"],
            "window_report": per_class_report(window["confusion_matrix"], self.labels),
            "confusion_matrix": window["confusion_matrix"],
            "clips": clips,
        }


def sample_windows(cfg: TrainConfig, count: int) -> np.ndarray:
    """``count`` real windows spread over all the samples (export parity checks)."""
    ds = FolderDataset(cfg, Path(cfg.dataset.samples))
    pairs = [
        (seg, float(end)) for seg in ds.train_segments + ds.test_segments for end in seg.window_ends(cfg)
    ]
    if not pairs:
        raise FileNotFoundError(f"no windows in the samples of {cfg.dataset.samples}")
    pick = np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)
    return np.stack(
        [prepare_window(pairs[i][0].timestamps, pairs[i][0].joints, cfg.input, pairs[i][1]) for i in pick]
    )
