"""Train a model from your own clips, end to end (``python -m training``, docs/train-your-own.md).

Folder or CSV -> samples (`training.samples`) -> held-out split by group -> skeletons with the
service's pose code, cached by content (`training.clip_cache`) -> training (`training.train` on
`training.folder.FolderDataset`) -> ``python -m export onnx``, run as a child process (export sits
above training: docs/architecture.md) -> a model folder the service loads at start.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skeleton.paths import REPO_ROOT, RUNS_DIR, data_root, in_shipped_zoo
from training.clip_cache import CacheReport, extract_samples
from training.config import TrainConfig, load_config
from training.samples import Sample, SamplesError, labels_of, read_samples, split_samples, write_samples

BASE_CONFIG = REPO_ROOT / "configs" / "folder-stgcnpp-lite.yaml"
MODELS_DIR = (
    RUNS_DIR / "model_zoo"
)  # as `python -m export onnx`: serve with SKELACT_MODELS_DIR=runs/model_zoo
CACHE_DIR = REPO_ROOT / "cache" / "skeletons" / "clips"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ShippedModelError(ValueError):
    """The run would write into the shipped model zoo without ``--force``."""


@dataclass
class ClipsRun:
    """What a run wrote: the run folder, the model folder (None without export), the metrics."""

    out: Path
    model_dir: Path | None
    metrics: dict[str, Any]
    samples: list[Sample]
    extraction: CacheReport


def check_targets(name: str, out: Path, model_dir: Path, force: bool) -> None:
    """Fail before any work on a bad name or a shipped model that ``force`` does not allow replacing."""
    if not _NAME.match(name):
        raise SamplesError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    for path in (out, model_dir):
        if in_shipped_zoo(path) and not force:
            raise ShippedModelError(
                f"{path} is inside the shipped model zoo (model_zoo/); write your model to "
                f"runs/ (the default) or pass --force to replace its files"
            )


def run_config(
    base: Path, name: str, samples_csv: Path, seed: int, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The base config with this run's name, seed and samples (``overrides`` win)."""
    return load_config(
        base,
        {
            "name": name,
            "seed": seed,
            "dataset.name": "folder",
            "dataset.samples": str(samples_csv.absolute()),
            **(overrides or {}),
        },
    )


def export_model(checkpoint: Path, model_dir: Path, force: bool, log: Callable[[str], None]) -> None:
    """``python -m export onnx`` (parity-checked ONNX + manifest) in a child process."""
    cmd = [sys.executable, "-m", "export", "onnx", "--checkpoint", str(checkpoint), "--out", str(model_dir)]
    done = subprocess.run(cmd + (["--force"] if force else []), cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"export failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    parity = json.loads(done.stdout)["parity"]
    log(
        f"exported {model_dir}: ONNX Runtime vs PyTorch on {parity['windows']} real windows, "
        f"max abs logit error {parity['max_abs_error']:.2g}"
    )


def train_from_clips(
    source: Path,
    name: str,
    *,
    out: Path | None = None,
    models_dir: Path = MODELS_DIR,
    force: bool = False,
    config: Path = BASE_CONFIG,
    overrides: dict[str, Any] | None = None,
    test_size: float = 0.25,
    test_groups: Sequence[str] = (),
    seed: int = 0,
    cache_dir: Path = CACHE_DIR,
    jobs: int = 1,
    pose_options: dict[str, Any] | None = None,
    videos_root: Path | None = None,
    export: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ClipsRun:
    """Samples -> split -> skeletons -> training -> model folder ``models_dir/name``."""
    from training.train import train  # torch: only once there is something to train

    out = out or RUNS_DIR / name
    model_dir = models_dir / name
    check_targets(name, out, model_dir, force)
    samples = split_samples(read_samples(source, videos_root), test_size, seed, test_groups)
    labels = labels_of(samples)
    counts = {split: sum(s.split == split for s in samples) for split in ("train", "test")}
    log(
        f"{len(samples)} samples of {len(labels)} labels from {source}: {counts['train']} train, "
        f"{counts['test']} held out"
    )
    untested = sorted(set(labels) - {s.label for s in samples if s.split == "test"})
    if untested:
        log(f"warning: no held-out clip for {untested} (one group each): add clips to measure them")
    samples, extraction = extract_samples(
        samples, cache_dir, {"max_people": 4, **(pose_options or {})}, jobs, progress
    )
    log(
        f"skeletons: {len(extraction.extracted)} videos extracted, {len(extraction.reused)} already cached, "
        f"{len(extraction.failed)} failed ({cache_dir})"
    )
    for video, reason in extraction.failed.items():
        log(f"warning: {video} left out: {reason}")
    missing = sorted(set(labels) - {s.label for s in samples if s.split == "train"})
    if missing:
        raise SamplesError(f"no readable training clip for {missing}")
    out.mkdir(parents=True, exist_ok=True)
    samples_csv = write_samples(samples, out / "samples.csv")
    cfg = run_config(config, name, samples_csv, seed, overrides)
    with (out / "train.log").open("w") as fh:

        def both(msg: str) -> None:
            log(msg)
            fh.write(msg + "\n")
            fh.flush()

        metrics = train(cfg, out, data_root(), both)
    if export:
        export_model(out / "checkpoint.pt", model_dir, force, log)
    (out / "summary.json").write_text(
        json.dumps(summary(metrics, out, model_dir if export else None), indent=1)
    )
    return ClipsRun(out, model_dir if export else None, metrics, samples, extraction)


def summary(metrics: dict[str, Any], out: Path, model_dir: Path | None) -> dict[str, Any]:
    """The headline numbers and where everything is."""
    keys = (
        "clip_top1",
        "num_clips",
        "window_top1",
        "num_windows",
        "clip_per_class_accuracy",
        "train_seconds",
    )
    return {
        **{k: metrics[k] for k in keys if k in metrics},
        "run": str(out),
        "model": None if model_dir is None else str(model_dir),
    }
