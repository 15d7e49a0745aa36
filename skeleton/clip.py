"""Clip-level decision from a sequence of window class-probabilities (numpy only).

The offline evaluation and the service's whole-clip endpoint both call the same function so that
the HTTP answer reproduces the reported numbers. With fall classes the service decides with
``decide_confirmed``: a clip is a fall when a fall was *confirmed* (``skeleton.falls``: the fall
pattern, then the person seen down), and its label is that fall's class; otherwise the label is the
argmax of the mean window probabilities over the non-fall classes. ``decide`` is the rule before
(a run of ``min_fall_windows`` windows whose summed fall-class probability is >= ``fall_threshold``
is a fall, labelled by the fall class with the highest mean over those windows), kept for models
without a fall rule and for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from skeleton.falls import FallEvent
    from skeleton.manifest import ModelManifest


@dataclass(frozen=True)
class ClipRule:
    """Which class indices are falls and how sure a window must be. No fall classes: mean argmax."""

    fall_classes: tuple[int, ...] = ()
    fall_threshold: float = 0.5
    min_fall_windows: int = 1

    @classmethod
    def from_labels(cls, labels: Sequence[str], fall_labels: Sequence[str], fall_threshold: float = 0.5,
                    min_fall_windows: int = 1) -> ClipRule:
        missing = [f for f in fall_labels if f not in labels]
        if missing:
            raise ValueError(f"fall labels {missing} are not model labels")
        return cls(tuple(list(labels).index(f) for f in fall_labels), fall_threshold, min_fall_windows)

    @classmethod
    def from_manifest(cls, manifest: ModelManifest) -> ClipRule:
        spec = manifest.clip_rule
        fall = manifest.label_groups.get(spec.fall_group, [])
        return cls.from_labels(manifest.labels, fall, spec.fall_threshold, spec.min_fall_windows)


@dataclass(frozen=True)
class ClipDecision:
    """label: class index; confidence: its score; probs: (K,) clip scores (mean over the deciding
    windows); fall: the fall rule fired; fall_time: end time of the most fall-like window (s);
    fall_probability: the highest window fall probability (0 without fall classes)."""

    label: int
    confidence: float
    probs: np.ndarray
    fall: bool = False
    fall_time: float | None = None
    fall_probability: float = 0.0


def _check(window_probs: np.ndarray, window_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(window_probs, np.float64)
    t = np.asarray(window_ends, np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"window_probs must be (W>0, K), got {p.shape}")
    if t.shape != (p.shape[0],):
        raise ValueError(f"window_ends must be ({p.shape[0]},), got {t.shape}")
    return p, t


def fall_probability(window_probs: np.ndarray, rule: ClipRule) -> np.ndarray:
    """(W,) summed probability of the fall classes per window."""
    p = np.asarray(window_probs, np.float64)
    if not rule.fall_classes:
        return np.zeros(p.shape[0])
    return p[:, list(rule.fall_classes)].sum(axis=1)


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True values."""
    best = run = 0
    for m in mask:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def decide(window_probs: np.ndarray, window_ends: np.ndarray, rule: ClipRule | None = None) -> ClipDecision:
    """The clip label from (W, K) window probabilities and their (W,) end times."""
    p, t = _check(window_probs, window_ends)
    rule = rule or ClipRule()
    mean = p.mean(axis=0)
    if not rule.fall_classes:
        k = int(mean.argmax())
        return ClipDecision(k, float(mean[k]), mean)
    fall = fall_probability(p, rule)
    peak = int(fall.argmax())
    hits = fall >= rule.fall_threshold
    if hits.any() and _longest_run(hits) >= rule.min_fall_windows:
        probs = p[hits].mean(axis=0)
        classes = list(rule.fall_classes)
        k = classes[int(probs[classes].argmax())]
        return ClipDecision(k, float(probs[k]), probs, True, float(t[peak]), float(fall[peak]))
    masked = mean.copy()
    masked[list(rule.fall_classes)] = -np.inf
    k = int(masked.argmax())
    return ClipDecision(k, float(mean[k]), mean, False, None, float(fall[peak]))


def decide_confirmed(
    window_probs: np.ndarray,
    window_ends: np.ndarray,
    rule: ClipRule,
    events: Sequence[FallEvent],
    track_id: int | None,
) -> ClipDecision:
    """The clip label of the person ``track_id`` (the primary) when falls are confirmed by
    ``skeleton.falls`` (``events``: the clip's, every person's, in time order).

    ``fall`` and ``fall_time``: the clip's first confirmed fall, anyone's. The label: the class of
    this person's own fall (``skeleton.falls.falls_of``: raised on their track or taken over from
    it), scored by its fall windows; without one, the best non-fall class of the mean window
    probabilities. ``rule``: only its fall classes count here (its threshold is ``decide``'s).
    """
    from skeleton.falls import falls_of

    p, t = _check(window_probs, window_ends)
    first = next((e for e in events if e.kind == "fall"), None)
    own = falls_of(events, track_id)
    mean = p.mean(axis=0)
    peak = float(fall_probability(p, rule).max())
    fall_time = None if first is None else float(first.fall_time)
    if own:
        sel = np.isin(np.round(t, 6), np.round(np.asarray(own[0].fall_windows, np.float64), 6))
        probs = p[sel].mean(axis=0) if sel.any() else mean
        k = int(own[0].label)
        return ClipDecision(k, float(probs[k]), probs, True, fall_time, peak)
    masked = mean.copy()
    masked[list(rule.fall_classes)] = -np.inf
    k = int(masked.argmax())
    return ClipDecision(k, float(mean[k]), mean, first is not None, fall_time, peak)


def window_ends(first_seen: float, last_seen: float, window_seconds: float, hop_s: float) -> np.ndarray:
    """End times of the windows cut from a track seen from ``first_seen`` to ``last_seen`` (s).

    The service's schedule (service.buffer.TrackBuffer): the first window ends one window length
    after the first sighting, then one every ``hop_s`` (= stride / fps) up to the last sighting;
    a track shorter than one window gets a single window ending at its last sighting.
    """
    if hop_s <= 0:
        raise ValueError("hop_s must be positive")
    first_end = first_seen + window_seconds
    if first_end > last_seen + 1e-6:
        return np.array([last_seen], np.float64)
    k = np.arange(int(np.floor((last_seen + 1e-6 - first_end) / hop_s)) + 1)
    return first_end + k * hop_s
