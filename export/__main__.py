"""Export CLI.

    python -m export onnx --checkpoint runs/<name>/checkpoint.pt [--out runs/model_zoo/<name>] [--fp16]
                          [--force]
    python -m export tensorrt --models-dir model_zoo [--workspace-gb N] [--no-fp16] [--max-batch N]
                              [--trt-cache-dir DIR] [--dry-run]
    python -m export open-set --model-dir model_zoo/<name> --config configs/<name>.yaml
    python -m export fall-rule --model-dir model_zoo/<name> --cv-json artifacts/falls/cv.json [--fold shipped]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from skeleton.paths import REPO_ROOT, RUNS_DIR, MissingDataError, data_root, in_shipped_zoo

EXPORT_ZOO = RUNS_DIR / "model_zoo"  # default: a zoo of reproduced models (SKELACT_MODELS_DIR=runs/model_zoo)


def _cv_metrics(paths: list[Path]) -> dict[str, Any]:
    """Cross-validation runs' metrics.json (e.g. UP-Fall trial folds) for a model trained on all data."""
    keep = ("protocol", "clip_top1", "window_top1", "fall", "window_fall", "top1", "num_clips", "num_windows")
    folds = []
    for p in paths:
        m = json.loads(p.read_text())
        folds.append({"run": m.get("name", p.parent.name), **{k: m[k] for k in keep if k in m}})
    return {"cross_validation": folds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export",
                                 description="Export trained models to ONNX / TensorRT.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx", help="checkpoint -> model.onnx + manifest.json (+ parity check)")
    o.add_argument("--checkpoint", type=Path, required=True)
    o.add_argument("--out", type=Path,
                   help="model folder (default runs/model_zoo/<name>: serve it with "
                        "SKELACT_MODELS_DIR=runs/model_zoo)")
    o.add_argument("--force", action="store_true",
                   help="allow --out inside model_zoo/ (replaces a shipped model)")
    o.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx and its measured error")
    o.add_argument("--name", help="model name in the manifest (default: the config's name)")
    o.add_argument("--description", help="manifest description (default: the config's)")
    o.add_argument("--data-dir", type=Path, help="real data for the parity check (default $SKELACT_DATA_DIR)")
    o.add_argument("--cv-metrics", type=Path, nargs="*", default=[],
                   help="metrics.json of cross-validation runs to record with a model trained on all data")
    o.add_argument("--extra-metrics", type=Path,
                   help="a JSON object merged into the metrics (e.g. few-shot results)")
    u = sub.add_parser("open-set", help="copy a config's open_set rule ('unknown') into an exported model")
    u.add_argument("--model-dir", type=Path, required=True)
    u.add_argument("--config", type=Path, required=True, help="YAML config with an open_set section")
    f = sub.add_parser("fall-rule", help="copy the fall rule `python -m training.falls cv` chose into an "
                                         "exported model")
    f.add_argument("--model-dir", type=Path, required=True)
    f.add_argument("--cv-json", type=Path, required=True, help="the --json of `python -m training.falls cv`")
    f.add_argument("--fold", default="shipped", choices=["shipped", "t1->t2", "t2->t1"],
                   help="whose rule: the shipped model's (chosen on both trials) or a fold's")
    t = sub.add_parser("tensorrt", help="build TensorRT engines for every model (needs an NVIDIA GPU)")
    t.add_argument("--models-dir", type=Path, default=REPO_ROOT / "model_zoo")
    t.add_argument("--workspace-gb", type=float, default=2.0)
    t.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="FP16 engines (default: the service's SKELACT_TRT_FP16, true)")
    t.add_argument("--max-batch", type=int,
                   help="largest batch of the profile (default: SKELACT_BATCH_MAX_SIZE, 64)")
    t.add_argument("--trt-cache-dir", type=Path,
                   help="engine cache root (default: SKELACT_TRT_CACHE_DIR, else <model>/trt_cache)")
    t.add_argument("--dry-run", action="store_true",
                   help="print each model's engine folder and its complete files; build nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "onnx":
        from export.onnx_export import ExportError, export_checkpoint
        from training.checkpoint import load_checkpoint

        out = args.out or EXPORT_ZOO / (args.name or load_checkpoint(args.checkpoint).config.name)
        if in_shipped_zoo(out) and not args.force:
            print(f"error: {out} is inside the shipped model zoo (model_zoo/); export into runs/model_zoo "
                  "(the default) or pass --force to replace the shipped model", file=sys.stderr)
            return 2
        extra = _cv_metrics(args.cv_metrics) if args.cv_metrics else {}
        if args.extra_metrics:
            extra.update(json.loads(args.extra_metrics.read_text()))
        plots = {p.parent.name: p.parent for p in args.cv_metrics}
        try:
            manifest = export_checkpoint(args.checkpoint, out, args.data_dir or data_root(), REPO_ROOT,
                                         fp16=args.fp16, name=args.name, extra_metrics=extra or None,
                                         extra_plots=plots, description=args.description)
        except ExportError as exc:
            print(f"export failed: {exc}", file=sys.stderr)
            return 1
        except MissingDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"name": manifest.name, "out": str(out), "onnx": manifest.onnx.model_dump(),
                          "parity": manifest.metrics.get("onnx_parity")}, indent=1))
        return 0
    if args.cmd == "open-set":
        from export.onnx_export import apply_open_set
        from training.config import load_config

        spec = load_config(args.config).open_set
        if spec is None:
            print(f"error: {args.config} has no open_set section", file=sys.stderr)
            return 1
        manifest = apply_open_set(args.model_dir, spec)
        print(json.dumps({"model": manifest.name, "open_set": spec.model_dump()}, indent=1))
        return 0
    if args.cmd == "fall-rule":
        from export.onnx_export import ExportError, apply_fall_rule
        from skeleton.manifest import FallRuleSpec

        rule = FallRuleSpec.model_validate(json.loads(args.cv_json.read_text())[args.fold]["spec"])
        try:
            manifest = apply_fall_rule(args.model_dir, rule)
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"model": manifest.name, "fall_rule": rule.model_dump()}, indent=1))
        return 0
    import dataclasses

    from export.tensorrt import EngineSettings, TensorRTUnavailable, build_all, engine_plan

    service = EngineSettings.of_service()
    settings = dataclasses.replace(
        service,
        fp16=service.fp16 if args.fp16 is None else args.fp16,
        max_batch=args.max_batch or service.max_batch,
        cache_dir=args.trt_cache_dir or service.cache_dir,
    )
    if args.dry_run:
        for entry in engine_plan(args.models_dir, settings):
            print(json.dumps(entry))
        return 0
    try:
        reports = build_all(args.models_dir, settings, args.workspace_gb)
    except TensorRTUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in reports:
        print(json.dumps(r.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
