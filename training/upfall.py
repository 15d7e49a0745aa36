"""UP-Fall (Martínez-Villaseñor et al., Sensors 2019) from the MediaPipe skeleton cache.

One cached ``.npz`` per video (``training.skeleton_cache``); the primary track is the actor.
Windows are cut by ``skeleton.preprocess.prepare_window`` at the service's window schedule
(``skeleton.clip.window_ends``), and clip labels come from ``skeleton.clip.decide`` -- the code
the service's whole-clip endpoint runs -- so the offline numbers are the served numbers.

Fall clips are untrimmed (stand, fall, lie). The fall moment is detected from the skeleton as
the largest downward velocity of the hip centre in the image; a window is labelled with the fall
class when that moment lies inside it (at least ``fall_margin_s`` from both ends); windows before
and after it are excluded or labelled 'standing' / 'laying' (``DatasetConfig.pre_fall`` /
``post_fall``). See docs/models.md for why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.clip import ClipRule, decide, fall_probability, window_ends
from skeleton.falls import fastest_descent
from skeleton.layouts import get_layout
from skeleton.paths import DATA_DIR_ENV, missing_data
from skeleton.preprocess import mediapipe_to_canonical, prepare_window, sequence_to_layout
from skeleton.types import SkeletonSequence
from training.augment import add_noise, corrupt, geometric
from training.config import TrainConfig
from training.datasets import ActionDataset
from training.metrics import binary_metrics, classification_metrics
from training.skeleton_cache import iter_cache, load_clip

ACTIVITIES: tuple[str, ...] = (
    "falling forward using hands", "falling forward using knees", "falling backwards", "falling sideward",
    "falling sitting in empty chair", "walking", "standing", "sitting", "picking up an object", "jumping",
    "laying",
)
FALL_LABELS: tuple[str, ...] = ACTIVITIES[:5]
STANDING = ACTIVITIES.index("standing")
LAYING = ACTIVITIES.index("laying")
_NAME = re.compile(r"Activity(\d+)[/\\]Trial(\d+)Cam(\d+)\.npz$")


@dataclass(frozen=True)
class UpFallClip:
    """The primary track of one video in the model's layout (NaN where the actor was missed)."""

    activity: int  # 1..11
    trial: int
    camera: int
    timestamps: np.ndarray  # (T,)
    joints: np.ndarray  # (T, V, 3) canonical, model layout and coordinates
    seen: np.ndarray  # (T,) bool
    fall_time: float | None  # seconds; fall activities only

    @property
    def label(self) -> int:
        return self.activity - 1

    @property
    def is_fall(self) -> bool:
        return ACTIVITIES[self.label] in FALL_LABELS

    @property
    def name(self) -> str:
        return f"Activity{self.activity}/Trial{self.trial}Cam{self.camera}"


def parse_cache_name(path: Path) -> tuple[int, int, int]:
    m = _NAME.search(path.as_posix())
    if m is None:
        raise ValueError(f"not an UP-Fall cache path: {path}")
    a, t, c = (int(g) for g in m.groups())
    return a, t, c


def detect_fall_time(seq: SkeletonSequence, frame_height: float) -> float | None:
    """Time of the largest downward hip-centre velocity in the image (None if never seen)."""
    img = mediapipe_to_canonical(seq, "image", frame_height)
    hip_y = img[:, [23, 24], 1].mean(axis=1)
    ok = np.isfinite(hip_y)
    return fastest_descent(seq.timestamps[ok], -hip_y[ok])  # canonical y points up


def load_upfall(cache_dir: Path, cfg: TrainConfig, trials: list[int]) -> list[UpFallClip]:
    """Primary tracks of the cached clips of ``trials`` / ``cfg.dataset.cameras``, sorted by name."""
    files = iter_cache(cache_dir)
    if not files:
        raise missing_data(
            "the UP-Fall skeleton cache",
            cache_dir,
            f"then extract it: python -m training.extract --videos ${DATA_DIR_ENV}/upfall --out {cache_dir} "
            "--max-people 2 --jobs 2",
        )
    clips = []
    for path in files:
        a, t, c = parse_cache_name(path)
        if t not in trials or c not in cfg.dataset.cameras:
            continue
        cached = load_clip(path)
        track = cached.primary_track
        if track is None:
            continue
        joints = sequence_to_layout(track, cfg.input, float(cached.height))
        seen = np.isfinite(joints).all(axis=(1, 2))
        fall = detect_fall_time(track, float(cached.height)) if ACTIVITIES[a - 1] in FALL_LABELS else None
        clips.append(UpFallClip(a, t, c, track.timestamps, joints, seen, fall))
    return sorted(clips, key=lambda k: (k.activity, k.trial, k.camera))


def clip_window_ends(clip: UpFallClip, cfg: TrainConfig, hop_s: float | None = None,
                     lead_in: float = 0.0) -> np.ndarray:
    """The service's window schedule over the actor's sightings (optionally a finer hop, and for
    training windows starting up to ``lead_in`` windows before the first sighting)."""
    if not clip.seen.any():
        return np.zeros(0)
    seen_t = clip.timestamps[clip.seen]
    w = cfg.input.window
    first = float(seen_t[0]) - lead_in * w.seconds
    return window_ends(first, float(seen_t[-1]), w.seconds, hop_s or w.stride / w.fps)


def window_label(clip: UpFallClip, end: float, cfg: TrainConfig) -> int | None:
    """Training/evaluation label of the window ending at ``end`` (None: excluded)."""
    if not clip.is_fall:
        return clip.label
    if clip.fall_time is None:
        return None
    ds, start = cfg.dataset, end - cfg.input.window.seconds
    if start + ds.fall_margin_s <= clip.fall_time <= end - ds.fall_margin_s:
        return clip.label
    if end < clip.fall_time - ds.pre_fall_gap_s:
        return STANDING if ds.pre_fall == "standing" else None
    if start > clip.fall_time + ds.post_fall_gap_s:
        return LAYING if ds.post_fall == "laying" else None
    return None


class UpFallDataset(ActionDataset):
    """Sliding windows of the primary track; window-level and clip-level (skeleton.clip) evaluation."""

    # Training windows every this many seconds (denser than the served stride: more samples).
    TRAIN_HOP_S = 0.125

    def __init__(self, cfg: TrainConfig, cache_dir: Path) -> None:
        self.cfg = cfg
        self.layout = get_layout(cfg.input.layout)
        self.labels = list(ACTIVITIES)
        self.label_groups = {"fall": list(FALL_LABELS)}
        self.rule = ClipRule.from_labels(self.labels, FALL_LABELS, cfg.clip_rule.fall_threshold,
                                         cfg.clip_rule.min_fall_windows)
        ds = cfg.dataset
        self.protocol = (f"cross-trial, sliding windows + skeleton.clip rule: train trials "
                         f"{ds.train_trials}, test trials {ds.test_trials}, cameras {ds.cameras}")
        self.train_clips = load_upfall(cache_dir, cfg, ds.train_trials)
        self.test_clips = load_upfall(cache_dir, cfg, ds.test_trials) if ds.test_trials else []
        items: list[tuple[int, float, int]] = []
        for ci, clip in enumerate(self.train_clips):
            for end in clip_window_ends(clip, cfg, self.TRAIN_HOP_S, ds.train_lead_in):
                label = window_label(clip, float(end), cfg)
                if label is not None and (not ds.classes or label + 1 in ds.classes):
                    items.append((ci, float(end), label))
        self.train_items = items
        self.train_labels = np.array([i[2] for i in items], np.int64)
        # Test: every served window of every clip; labels -1 where excluded from window metrics.
        inputs, labels, owners, ends = [], [], [], []
        for ci, clip in enumerate(self.test_clips):
            for end in clip_window_ends(clip, cfg):
                inputs.append(prepare_window(clip.timestamps, clip.joints, cfg.input, float(end)))
                lab = window_label(clip, float(end), cfg)
                labels.append(-1 if lab is None else lab)
                owners.append(ci)
                ends.append(float(end))
        v = self.layout.num_joints
        self.all_test_inputs = (np.stack(inputs) if inputs else
                                np.zeros((0, cfg.input.channels, cfg.input.window.length, v), np.float32))
        self.all_test_labels = np.array(labels, np.int64)
        self.test_owner = np.array(owners, np.int64)
        self.test_ends = np.array(ends, np.float64)
        keep = self.all_test_labels >= 0
        # The trainer's per-epoch curves use the labelled windows.
        self.test_inputs = self.all_test_inputs[keep]
        self.test_labels = self.all_test_labels[keep]

    def restrict_train(self, keep: np.ndarray) -> None:
        self.train_items = [self.train_items[int(i)] for i in keep]
        self.train_labels = self.train_labels[keep]

    def train_input(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        ci, end, _ = self.train_items[index]
        clip = self.train_clips[ci]
        if rng is None:
            return prepare_window(clip.timestamps, clip.joints, self.cfg.input, end)
        aug = self.cfg.augment
        t = clip.timestamps
        if aug.speed:
            # Play the clip faster/slower around the window's end (the label's fall moment stays inside).
            f = rng.uniform(1 - aug.speed, 1 + aug.speed)
            t = end + (t - end) / f
        if aug.shift_s:
            end = end + rng.uniform(-aug.shift_s, aug.shift_s)
        joints = corrupt(geometric(clip.joints, aug, rng, self.layout), aug.corrupt, rng, self.layout)
        return add_noise(prepare_window(t, joints, self.cfg.input, end), aug.noise, rng)

    def predict_clips(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Clip decisions from the probabilities of ``all_test_inputs`` (skeleton.clip.decide)."""
        out = []
        for ci, clip in enumerate(self.test_clips):
            sel = self.test_owner == ci
            if not sel.any():
                continue
            d = decide(probs[sel], self.test_ends[sel], self.rule)
            out.append({"clip": clip.name, "true": clip.label, "pred": d.label, "fall": d.fall,
                        "fall_time": d.fall_time, "true_fall_time": clip.fall_time,
                        "fall_probability": round(d.fall_probability, 4), "windows": int(sel.sum())})
        return out

    def evaluate(self, predict_fn: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
        """Window-level metrics on the labelled windows, clip-level ones on every served window."""
        return self.evaluate_all(predict_fn(self.all_test_inputs))

    def evaluate_all(self, all_probs: np.ndarray) -> dict[str, Any]:
        """Window-level and clip-level metrics from probabilities of ``all_test_inputs``."""
        keep = self.all_test_labels >= 0
        probs, labels = all_probs[keep], self.all_test_labels[keep]
        fall_idx = set(self.rule.fall_classes)
        window = classification_metrics(labels, probs.argmax(1), self.labels)
        window_fall = binary_metrics(np.isin(labels, list(fall_idx)),
                                     fall_probability(probs, self.rule) >= self.rule.fall_threshold)
        clips = self.predict_clips(all_probs)
        y_true = np.array([c["true"] for c in clips])
        y_pred = np.array([c["pred"] for c in clips])
        clip_m = classification_metrics(y_true, y_pred, self.labels)
        fall = binary_metrics(np.isin(y_true, list(fall_idx)), np.array([c["fall"] for c in clips]))
        return {
            "clip_top1": clip_m["top1"], "num_clips": clip_m["num_samples"],
            "clip_per_class_accuracy": clip_m["per_class_accuracy"],
            "clip_confusion_matrix": clip_m["confusion_matrix"], "fall": fall,
            "window_top1": window["top1"], "num_windows": window["num_samples"],
            "window_per_class_accuracy": window["per_class_accuracy"],
            "confusion_matrix": window["confusion_matrix"], "window_fall": window_fall,
            "clips": clips,
        }


def sample_windows(cfg: TrainConfig, cache_dir: Path, count: int) -> np.ndarray:
    """``count`` real windows spread over every cached clip (export parity checks)."""
    clips = load_upfall(cache_dir, cfg, sorted({*cfg.dataset.train_trials, *cfg.dataset.test_trials}))
    pairs = [(c, float(e)) for c in clips for e in clip_window_ends(c, cfg)]
    if not pairs:
        raise FileNotFoundError(f"no UP-Fall windows under {cache_dir}")
    pick = np.linspace(0, len(pairs) - 1, min(count, len(pairs))).round().astype(int)
    return np.stack([prepare_window(pairs[i][0].timestamps, pairs[i][0].joints, cfg.input, pairs[i][1])
                     for i in pick])
