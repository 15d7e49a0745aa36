"""Accuracy on damaged skeletons (``skeleton.corrupt``): UTD-MHAD cross-subject, UP-Fall folds.

    python -m training.robustness --checkpoint runs/<a>/checkpoint.pt [--checkpoint ...] \\
        [--json artifacts/robustness.json] [--plot docs/img/robustness.png]

Every test sample's raw joints are damaged (missing joints, a missing limb, dropped frames,
positional noise; ``skeleton.corrupt.CONDITIONS``) before the shared preprocessing, so the gap
filling the service runs is what copes. The damage is seeded per (condition, clip): every model
meets exactly the same damaged skeletons. UP-Fall windows are cut from the damaged clip as the
service cuts them, and the clip label and fall alert come from ``skeleton.clip.decide``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.corrupt import CONDITIONS, Corruption
from skeleton.layouts import get_layout
from skeleton.paths import REPO_ROOT, data_root
from skeleton.preprocess import prepare_clip, prepare_window
from training.checkpoint import LoadedCheckpoint, load_checkpoint
from training.datasets import UtdMhadDataset, build_dataset
from training.train import predict


def _rng(seed: int, condition: int, clip: int) -> np.random.Generator:
    return np.random.default_rng([seed, condition, clip])


def damaged_inputs(ds: Any, condition: Corruption, index: int, seed: int = 0) -> np.ndarray:
    """The test inputs of ``ds`` (a UTD-MHAD or UP-Fall dataset) with every clip damaged."""
    cfg = ds.cfg
    layout = get_layout(cfg.input.layout)
    if isinstance(ds, UtdMhadDataset):
        return np.stack([prepare_clip(condition.apply(c.joints, layout, _rng(seed, index, i)), cfg.input)
                         for i, c in enumerate(ds.test_clips)])
    joints = [condition.apply(c.joints, layout, _rng(seed, index, i)) for i, c in enumerate(ds.test_clips)]
    return np.stack([prepare_window(ds.test_clips[o].timestamps, joints[o], cfg.input, float(e))
                     for o, e in zip(ds.test_owner, ds.test_ends, strict=True)])


def evaluate_damaged(ck: LoadedCheckpoint, ds: Any, conditions: Sequence[Corruption] = CONDITIONS,
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """Test metrics of ``ck`` under every condition: top-1 (UTD-MHAD), or clip / window top-1 and
    fall recall / precision (UP-Fall)."""
    out: dict[str, dict[str, Any]] = {}
    for k, cond in enumerate(conditions):
        probs = predict(ck.model, damaged_inputs(ds, cond, k, seed))
        if isinstance(ds, UtdMhadDataset):
            out[cond.name] = {"top1": round(float((probs.argmax(1) == ds.test_labels).mean()), 4)}
            continue
        m = ds.evaluate_all(probs)
        out[cond.name] = {"clip_top1": m["clip_top1"], "window_top1": m["window_top1"],
                          "fall_recall": m["fall"]["recall"], "fall_precision": m["fall"]["precision"]}
    return out


def plot(results: dict[str, dict[str, dict[str, Any]]], out: Path) -> None:
    """One panel per metric, conditions along x; one colour per dataset / fold, dashed for models
    whose name ends in 'before'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("UTD-MHAD top-1", "top1"), ("UP-Fall clip top-1", "clip_top1"),
               ("UP-Fall window top-1", "window_top1"), ("UP-Fall fall recall", "fall_recall"),
               ("UP-Fall fall precision", "fall_precision")]
    metrics = [(t, k) for t, k in metrics if any(k in next(iter(r.values())) for r in results.values())]
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    groups = list(dict.fromkeys(name.rsplit(" ", 1)[0] for name in results))
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    for ax, (title, key) in zip(axes.flat, metrics, strict=False):
        for name, res in results.items():
            conds = list(res)
            if key not in res[conds[0]]:
                continue
            ax.plot(range(len(conds)), [100 * (res[c][key] or 0) for c in conds], marker="o", label=name,
                    color=colours[name.rsplit(" ", 1)[0]], linestyle="--" if name.endswith("before") else "-")
            ax.set_xticks(range(len(conds)), conds, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.robustness", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True,
                    help="NAME=PATH or PATH (repeatable); UP-Fall runs are tested on their test trials")
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default $SKELACT_DATA_DIR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for item in args.checkpoint:
        name, sep, path = str(item).partition("=")
        path = path if sep else name
        t0 = time.perf_counter()
        ck = load_checkpoint(Path(path))
        ds = build_dataset(ck.config, args.data_dir or data_root(), REPO_ROOT)
        results[name] = evaluate_damaged(ck, ds, seed=args.seed)
        print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(results[name])}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
