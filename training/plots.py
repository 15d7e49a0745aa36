"""PNG plots written next to every trained / exported model (curves and confusion matrices)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and top-1 per epoch, train and test."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    test = [h for h in history if h.get("test_loss") is not None]
    if test:
        ax_loss.plot([h["epoch"] for h in test], [h["test_loss"] for h in test], label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(epochs, [h["train_top1"] for h in history], label="train (augmented)")
    if test:
        ax_acc.plot([h["epoch"] for h in test], [h["test_top1"] for h in test], label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title("accuracy")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_member_curves(histories: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """An ensemble's members: training loss and top-1 per epoch, one line per member."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], label=name)
        ax_acc.plot(epochs, [h["train_top1"] for h in history], label=name)
    for ax, label in ((ax_loss, "cross-entropy"), (ax_acc, "top-1 (train, augmented)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_acc.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_confusion(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class) with counts in the cells."""
    m = np.asarray(cm, np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(labels)
    size = max(5.0, 0.38 * n + 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = [f"{i + 1} {lab[:28]}" for i, lab in enumerate(labels)]
    ax.set_xticks(range(n), [str(i + 1) for i in range(n)], fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_run(run_dir: Path) -> list[Path]:
    """(Re)draw a run's PNGs from its metrics.json (labels in the per-class accuracy order)."""
    import json

    m = json.loads((run_dir / "metrics.json").read_text())
    name, arch = m.get("name", run_dir.name), m.get("arch", "")
    out = [run_dir / "curves.png"]
    if "member_history" in m:  # an ensemble (training.ensemble): its members' training
        k = len(m["member_history"])
        plot_member_curves(m["member_history"], out[0], f"{name} ({arch}, ensemble of {k})")
    else:
        plot_curves(m["history"], out[0], f"{name} ({arch})")
    labels = list((m.get("per_class_accuracy") or m.get("window_per_class_accuracy") or {}).keys())
    if "confusion_matrix" in m and labels:
        level, acc = ("window", m.get("window_top1")) if "window_top1" in m else ("test", m.get("top1"))
        out.append(run_dir / "confusion.png")
        plot_confusion(m["confusion_matrix"], labels, out[-1], f"{name}: {level} top-1 {acc}")
    if "clip_confusion_matrix" in m and labels:
        out.append(run_dir / "confusion_clip.png")
        title = f"{name}: clip top-1 {m.get('clip_top1')}"
        plot_confusion(m["clip_confusion_matrix"], labels, out[-1], title)
    return out


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(*plot_run(Path(arg)))
