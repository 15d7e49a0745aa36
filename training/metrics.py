"""Classification metrics written to metrics.json (plain lists/dicts, JSON-serialisable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """top-1, per-class accuracy (recall) and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    support = cm.sum(axis=1)
    per_class = {lab: (round(float(cm[i, i] / support[i]), 4) if support[i] else None)
                 for i, lab in enumerate(labels)}
    return {
        "top1": round(float((np.asarray(y_true) == np.asarray(y_pred)).mean()), 4) if len(y_true) else None,
        "num_samples": len(y_true),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Precision / recall / counts for a boolean detection (e.g. fall vs no fall)."""
    t = np.asarray(y_true, bool)
    p = np.asarray(y_pred, bool)
    tp, fp, fn, tn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()), int((~t & ~p).sum())
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of "known scores higher than unknown" (Mann-Whitney U / n1 n2)."""
    from scipy.stats import mannwhitneyu

    k, u = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if not len(k) or not len(u):
        return float("nan")
    return float(mannwhitneyu(k, u, alternative="two-sided").statistic / (len(k) * len(u)))


def youden_threshold(known: np.ndarray, unknown: np.ndarray) -> float:
    """The threshold t (accept when score >= t) maximising known accepted - unknown accepted;
    midway between the two neighbouring scores, so it does not sit on a calibration sample."""
    k, u = np.sort(np.asarray(known, np.float64)), np.sort(np.asarray(unknown, np.float64))
    values = np.unique(np.concatenate([k, u]))
    cands = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    tpr = 1.0 - np.searchsorted(k, cands, side="left") / len(k)
    fpr = 1.0 - np.searchsorted(u, cands, side="left") / len(u)
    return float(cands[int(np.argmax(tpr - fpr))])
