"""Re-evaluate a finished run on the current skeleton cache, optionally with another clip rule.

    python -m training.evaluate --run runs/<name> [--fall-threshold 0.6] [--min-fall-windows N]

The clip rule (skeleton.clip) is a decision on top of the trained network, so changing it needs no
retraining. The run's ``metrics.json`` test metrics are replaced by the new evaluation (the
training history is kept, the plots redrawn) and the rule is stored in the checkpoint's config, so that
``python -m export`` writes it into the model manifest the service reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from skeleton.paths import REPO_ROOT, data_root
from training.checkpoint import load_checkpoint
from training.datasets import build_dataset
from training.plots import plot_run
from training.train import predict


def reevaluate(run: Path, data_root: Path, fall_threshold: float | None = None,
               min_fall_windows: int | None = None, repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    """New test metrics of ``run`` (written back to the run); the rule overrides are persisted."""
    path = run / "checkpoint.pt"
    ck = load_checkpoint(path)
    update: dict[str, Any] = {}
    if fall_threshold is not None:
        update["fall_threshold"] = fall_threshold
    if min_fall_windows is not None:
        update["min_fall_windows"] = min_fall_windows
    cfg = ck.config.model_copy(update={"clip_rule": ck.config.clip_rule.model_copy(update=update)})
    ds = build_dataset(cfg, data_root, repo_root)
    metrics = dict(ck.metrics)
    if len(ds.test_labels):
        metrics.update(ds.evaluate(lambda x: predict(ck.model, x)))
    raw = torch.load(path, map_location="cpu", weights_only=False)
    raw["config"] = cfg.model_dump(mode="json")
    raw["metrics"] = metrics
    torch.save(raw, path)
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_run(run)  # confusion matrices of the new evaluation
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="run directory with checkpoint.pt")
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default $SKELACT_DATA_DIR)")
    ap.add_argument("--fall-threshold", type=float, default=None)
    ap.add_argument("--min-fall-windows", type=int, default=None)
    args = ap.parse_args(argv)
    m = reevaluate(args.run, args.data_dir or data_root(), args.fall_threshold, args.min_fall_windows)
    keys = ("clip_top1", "window_top1", "fall", "top1")
    print(json.dumps({k: m[k] for k in keys if k in m}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
