"""Build one ensemble checkpoint from K training runs of one recipe (seeds), for ``python -m export``.

    python -m training.ensemble runs/study/corrupt-shipped-s0 runs/study/corrupt-shipped-s1 \\
        runs/study/corrupt-shipped-s2 --out runs/upfall-stgcnpp-lite-ens3

The members must agree on everything the service relies on (labels, label groups, input spec,
dataset split, architecture); they differ by seed (classifiers), or by seed and augmentation (the
embedding's ensemble, docs/fewshot.md). Classifiers combine by mean probability, embeddings by mean
cosine (``models.ensemble``). The checkpoint keeps each member's weights and config, and the
ensemble's own config (the first member's, which carries the fall/clip rules; ``--set`` changes it,
e.g. the calibrated ``embedding.logit_scale`` measured on the ensemble), labels and metrics, so
``training.checkpoint.load_checkpoint`` returns the ensemble and ``export``, ``training.falls cv
--write``, ``training.study`` and the bench treat it like any run. With test data (a fold's held-out
trial) its metrics are measured as ``training.train`` measures a run: ``ActionDataset.evaluate`` on
the ensemble's mean probabilities.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from skeleton.manifest import EnsembleMember, EnsembleSpec, sha256_file
from skeleton.paths import REPO_ROOT, MissingDataError, data_root
from training.checkpoint import load_checkpoint
from training.config import TrainConfig, with_overrides

CHECKPOINT = "checkpoint.pt"
_SAME = ("labels", "label_groups")


def build_ensemble(runs: Sequence[Path], out_dir: Path, data: Path | None, evaluate: bool = True,
                   log: Callable[[str], None] = print, plots: bool = True,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out_dir/checkpoint.pt`` (+ metrics.json, config.yaml, the PNGs: the members' curves,
    the confusion matrices when measured) for the runs' mean-probability ensemble; returns its
    metrics."""
    raws = [torch.load(r / CHECKPOINT, map_location="cpu", weights_only=False) for r in runs]
    cfgs = [TrainConfig.model_validate(raw["config"]) for raw in raws]
    first, cfg = raws[0], cfgs[0]
    for run, raw, other in zip(runs[1:], raws[1:], cfgs[1:], strict=True):
        same = (other.input, other.dataset, other.model) == (cfg.input, cfg.dataset, cfg.model)
        if not same or any(raw[k] != first[k] for k in _SAME):
            raise ValueError(f"{run} differs from {runs[0]} in labels, input, dataset or model: "
                             "not one recipe")
    own_config = with_overrides(copy.deepcopy(first["config"]), overrides)
    cfg = TrainConfig.model_validate(own_config)
    spec = EnsembleSpec(combine="mean_cosine" if cfg.embedding is not None else "mean_probability", members=[
        EnsembleMember(run=r.name, seed=int(c.seed), sha256=sha256_file(r / CHECKPOINT))
        for r, c in zip(runs, cfgs, strict=True)
    ])
    member_metrics = [raw["metrics"] for raw in raws]
    metrics: dict[str, Any] = {
        "name": cfg.name, "dataset": cfg.dataset.name, "arch": cfg.model.arch,
        "protocol": first["metrics"].get("protocol", ""),
        "ensemble": spec.model_dump(),
        "params": sum(int(m.get("params", 0)) for m in member_metrics),
        "flops": sum(int(m.get("flops", 0)) for m in member_metrics),
        "input_shape": first["metrics"].get("input_shape"),
        "member_metrics": [{k: m[k] for k in ("clip_top1", "window_top1", "top1") if k in m}
                           for m in member_metrics],
        "member_history": {r.name: m.get("history", []) for r, m in zip(runs, member_metrics, strict=True)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    ckpt = {"members": [{k: raw[k] for k in ("state_dict", "config", "labels", "label_groups")}
                        for raw in raws],
            "ensemble": spec.model_dump(), "config": own_config, "labels": first["labels"],
            "label_groups": first["label_groups"], "metrics": metrics}
    torch.save(ckpt, ckpt_path)
    if evaluate and (cfg.dataset.test_trials or cfg.dataset.test_subjects) and data is not None:
        from training.datasets import build_dataset
        from training.train import predict

        torch.set_num_threads(cfg.threads)
        ds = build_dataset(cfg, data, REPO_ROOT)
        if len(ds.test_labels):
            model = load_checkpoint(ckpt_path).model
            metrics.update(ds.evaluate(lambda x: predict(model, x)))
            keys = ("top1", "clip_top1", "window_top1", "fall")
            log(f"{out_dir.name}: " + json.dumps({k: metrics[k] for k in keys if k in metrics}))
            torch.save(ckpt, ckpt_path)  # now with the measured metrics (the same dict)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "config.yaml").write_text(yaml.safe_dump(own_config, sort_keys=False))
    if plots:
        from training.plots import plot_run

        plot_run(out_dir)
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (each with checkpoint.pt), one recipe")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default $SKELACT_DATA_DIR)")
    ap.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the test metrics")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="set a value of the ensemble's own config, e.g. embedding.logit_scale=20 "
                    "(repeatable)")
    args = ap.parse_args(argv)
    from training.train import parse_overrides

    if len(args.runs) < 2:
        ap.error("an ensemble needs at least two runs")
    try:
        metrics = build_ensemble(args.runs, args.out, args.data_dir or data_root(), args.evaluate,
                                 overrides=parse_overrides(args.set))
    except (ValueError, MissingDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: metrics[k] for k in ("clip_top1", "window_top1", "params", "flops") if k in metrics}
                     | {"out": str(args.out), "members": [m.run for m in EnsembleSpec.model_validate(
                         metrics["ensemble"]).members]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
