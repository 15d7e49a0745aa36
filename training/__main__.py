"""``python -m training DATA --name NAME``: train and export a model from your own clips.

DATA is a folder with one sub-folder of videos per label, or a CSV with columns clip, start, end,
label (optional: group). See docs/train-your-own.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.from_clips import BASE_CONFIG, CACHE_DIR, MODELS_DIR, ShippedModelError, train_from_clips
from training.samples import SamplesError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__.splitlines()[0],
        epilog="Output: runs/NAME/ (samples.csv, checkpoint.pt, metrics.json, plots) and "
        "the model folder MODELS_DIR/NAME; serve it with "
        "SKELACT_MODELS_DIR=MODELS_DIR (a restart loads it).",
    )
    ap.add_argument(
        "data", type=Path, help="folder of label sub-folders, or a CSV (clip,start,end,label[,group])"
    )
    ap.add_argument("--name", required=True, help="model name (folder names, the manifest, ?model=)")
    ap.add_argument(
        "--videos", type=Path, help="CSV clip paths are relative to this (default: the CSV's folder)"
    )
    ap.add_argument("--out", type=Path, help="run folder (default runs/NAME)")
    ap.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        help="the model folder goes to MODELS_DIR/NAME (default runs/model_zoo)",
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="allow writing into the shipped model zoo (model_zoo/): replaces a shipped model",
    )
    ap.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        help="share of each label's groups held out for testing (default 0.25)",
    )
    ap.add_argument(
        "--test-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="hold out exactly this CSV group (repeatable) instead of a random split",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    ap.add_argument("--epochs", type=int, help="override optim.epochs (default 24)")
    ap.add_argument("--config", type=Path, default=BASE_CONFIG, help="base training config (YAML)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set augment.mirror=true (repeatable)",
    )
    ap.add_argument(
        "--cache", type=Path, default=CACHE_DIR, help="skeleton cache (default cache/skeletons/clips)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="videos extracted at once (one core each)")
    ap.add_argument("--max-people", type=int, default=4, help="most people posed per frame (default 4)")
    ap.add_argument(
        "--no-export", action="store_true", help="train only (export later with python -m export onnx)"
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from training.train import parse_overrides

    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        overrides["optim.epochs"] = args.epochs
    try:
        run = train_from_clips(
            args.data,
            args.name,
            out=args.out,
            models_dir=args.models_dir,
            force=args.force,
            config=args.config,
            overrides=overrides,
            test_size=args.test_size,
            test_groups=args.test_group,
            seed=args.seed,
            cache_dir=args.cache,
            jobs=max(1, args.jobs),
            pose_options={"max_people": args.max_people},
            videos_root=args.videos,
            export=not args.no_export,
            progress=not args.no_progress,
        )
    except (SamplesError, ShippedModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((run.out / "summary.json").read_text())
    if run.model_dir is not None:
        print(
            f"serve it: SKELACT_MODELS_DIR={run.model_dir.parent} make serve  (restart a running service: "
            f"models load at start), then POST /recognize?model={args.name}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
