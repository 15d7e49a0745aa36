"""Training CLI: ``python -m training.train --config configs/<name>.yaml [--out runs/<name>] [--epochs N]``.

Seeded and deterministic on CPU. Writes ``checkpoint.pt`` (weights + the full config + labels +
metrics, everything ``python -m export`` needs), ``metrics.json``, ``curves.png`` and
``confusion*.png``. The model reported is the last epoch's: there is no validation split in
these protocols, so picking the best test epoch would overstate accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Spinning OpenMP workers stall badly when the cores are shared (measured: a 2-thread training
# step took 5x longer than a 1-thread one with other jobs running); passive waiting fixes it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import yaml
from torch import nn

from models import build_model, count_flops, count_params
from skeleton.paths import REPO_ROOT, RUNS_DIR, MissingDataError, data_root, in_shipped_zoo
from training.config import TrainConfig, load_config
from training.datasets import ActionDataset, build_dataset
from training.plots import plot_run

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int, threads: int) -> None:
    """Seed every generator. CPU kernels are deterministic for a fixed thread count (tested), so
    torch.use_deterministic_algorithms -- whose import of torch._dynamo costs ~20 s here -- is not used."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, K) softmax probabilities in eval mode."""
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(inputs[i : i + batch_size])), dim=1).numpy()
           for i in range(0, len(inputs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def lr_lambda(epochs: int, warmup: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero, per optimiser step."""
    total, warm = epochs * steps_per_epoch, warmup * steps_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return f


def epoch_indices(ds: ActionDataset, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    n, o = ds.num_train, cfg.optim
    size = o.samples_per_epoch or n
    if o.balanced:
        counts = np.bincount(ds.train_labels, minlength=len(ds.labels)).astype(np.float64)
        w = 1.0 / counts[ds.train_labels]
        return rng.choice(n, size=size, replace=True, p=w / w.sum())
    return rng.permutation(n) if size == n else rng.choice(n, size=size, replace=size > n)


def train(cfg: TrainConfig, out_dir: Path, data_root: Path, log: Callable[[str], None] = print,
          repo_root: Path = REPO_ROOT, max_train: int | None = None, plots: bool = True) -> dict[str, Any]:
    """Train ``cfg`` and write the run directory; returns the metrics. ``max_train`` caps the
    training set and ``plots=False`` skips the PNGs (quick tests). A config with an ``embedding``
    section trains an embedding model instead (``training.metric_learning``)."""
    if cfg.embedding is not None:
        from training.metric_learning import train_embedding

        return train_embedding(cfg, out_dir, data_root, log, max_train=max_train, plots=plots)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    t_load = time.perf_counter()
    ds = build_dataset(cfg, data_root, repo_root)
    if max_train is not None:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(ds.num_train)[:max_train])
        ds.restrict_train(keep)
    log(f"{cfg.name}: {ds.num_train} train / {len(ds.test_labels)} test samples, "
        f"{len(ds.labels)} classes (loaded in {time.perf_counter() - t_load:.1f} s)")
    model = build_model(cfg.model.arch, len(ds.labels), cfg.input.layout, **cfg.model.kwargs)
    v = len(ds.test_inputs[0, 0, 0]) if len(ds.test_inputs) else ds.train_input(0, None).shape[-1]
    input_shape = (cfg.input.channels, cfg.input.window.length, v)
    params, flops = count_params(model), count_flops(model, input_shape)
    log(f"model {cfg.model.arch}: {params / 1e6:.3f} M params, {flops / 1e9:.3f} GFLOPs per window")
    o = cfg.optim
    epochs = o.epochs
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    steps = math.ceil((o.samples_per_epoch or ds.num_train) / o.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(epochs, o.warmup_epochs, steps))
    criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = epoch_indices(ds, cfg, rng)
        total_loss, correct, seen = 0.0, 0, 0
        for b in range(0, len(order), o.batch_size):
            idx = order[b : b + o.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs more than one sample
            x = torch.from_numpy(np.stack([ds.train_input(int(i), rng) for i in idx]))
            y = torch.from_numpy(ds.train_labels[idx])
            logits = model(x)
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        row: dict[str, Any] = {"epoch": epoch, "lr": round(opt.param_groups[0]["lr"], 6),
                               "train_loss": round(total_loss / max(seen, 1), 5),
                               "train_top1": round(correct / max(seen, 1), 4), "test_loss": None,
                               "test_top1": None, "seconds": round(time.perf_counter() - t0, 1)}
        if len(ds.test_labels) and (epoch % o.eval_every == 0 or epoch == epochs):
            probs = predict(model, ds.test_inputs)
            row["test_loss"] = round(float(-np.log(probs[np.arange(len(probs)), ds.test_labels] + 1e-12)
                                           .mean()), 5)
            row["test_top1"] = round(float((probs.argmax(1) == ds.test_labels).mean()), 4)
        history.append(row)
        log(" ".join(f"{k}={v}" for k, v in row.items() if v is not None))
    train_seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {"name": cfg.name, "dataset": cfg.dataset.name, "arch": cfg.model.arch,
                               "protocol": ds.protocol}
    if len(ds.test_labels):
        metrics.update(ds.evaluate(lambda x: predict(model, x)))
    metrics.update({"params": params, "flops": flops, "input_shape": list(input_shape),
                    "epochs": epochs, "train_seconds": round(train_seconds, 1),
                    "num_train": ds.num_train, "num_test": len(ds.test_labels),
                    "torch_threads": torch.get_num_threads(), "history": history})
    torch.save({"state_dict": model.state_dict(), "config": cfg.model_dump(mode="json"),
                "labels": ds.labels, "label_groups": ds.label_groups, "metrics": metrics},
               out_dir / CHECKPOINT)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if plots:
        plot_run(out_dir)
    return metrics


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    ap.add_argument("--force", action="store_true",
                    help="allow --out inside model_zoo/ (replaces a shipped model's files)")
    ap.add_argument("--epochs", type=int, help="override optim.epochs")
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default $SKELACT_DATA_DIR)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        overrides["optim.epochs"] = args.epochs
    cfg = load_config(args.config, overrides)
    out = args.out or RUNS_DIR / cfg.name
    if in_shipped_zoo(out) and not args.force:
        print(f"error: {out} is inside the shipped model zoo (model_zoo/); train into runs/ (the default) "
              "or pass --force to replace its files", file=sys.stderr)
        return 2
    log_file = (out / "train.log")
    out.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as fh:
        def log(msg: str) -> None:
            print(msg, flush=True)
            fh.write(msg + "\n")
            fh.flush()

        try:
            metrics = train(cfg, out, args.data_dir or data_root(), log)
        except MissingDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    summary = {k: metrics[k] for k in ("top1", "clip_top1", "window_top1", "fall", "prototype_top1", "params",
                                       "flops", "train_seconds") if k in metrics}
    print(json.dumps({**summary, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
