"""UP-Fall recipes over seeds: clip accuracy as the service decides it, per seed and for seed ensembles.

    python -m training.study train --config configs/upfall-stgcnpp-lite-t1.yaml --seeds 0 1 2 \\
        --out runs/study/corrupt-t1 [--set optim.epochs=48 ...]
    python -m training.study report runs/study [--ensemble 3] [--json artifacts/study.json]

``train`` trains one run per seed (``<out>-s<seed>``; a finished run is kept). ``report`` groups the
run folders by name without the ``-s<seed>`` suffix (a recipe on one fold) and evaluates each run on
its test trial the way ``POST /recognize`` decides a clip: every track of every cached clip
classified on the service's window schedule, the confirmed falls of every person
(``skeleton.falls.clip_events`` with the run's ``fall_rule``) and ``skeleton.clip.decide_confirmed``
on the primary person. Beside it the single-window rule before (``skeleton.clip.decide`` at the
run's ``clip_rule``) and the window top-1 of ``metrics.json``. ``--ensemble K``: every K-seed
combination of a recipe's runs, their window probabilities averaged (what an ensemble exported as
one graph would serve; no such export exists yet). Each run's probabilities are kept in
``<run>/track_probs.npz``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.clip import ClipRule, decide, decide_confirmed
from skeleton.falls import FallRule, clip_events
from skeleton.manifest import InputSpec
from skeleton.paths import REPO_ROOT
from training.config import TrainConfig, load_config
from training.falls import track_inputs
from training.skeleton_cache import ClipSkeletons, iter_cache, load_clip
from training.upfall import ACTIVITIES, FALL_LABELS, parse_cache_name

PROBS_FILE = "track_probs.npz"
_SEED = re.compile(r"^(.*)-s(\d+)$")

Probs = dict[str, np.ndarray]  # "<clip>|<track id>" -> (W, K) window probabilities


@dataclass
class StudyClip:
    """A cached test clip: every track's windows (ends and model inputs) and the truth."""

    name: str
    activity: int
    clip: ClipSkeletons
    primary: int | None
    windows: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def truth(self) -> int:
        return self.activity - 1


def study_clips(cache_dir: Path, trials: Sequence[int], spec: InputSpec) -> list[StudyClip]:
    out = []
    for path in iter_cache(cache_dir):
        a, t, _ = parse_cache_name(path)
        if t not in trials:
            continue
        clip = load_clip(path)
        windows = {
            tid: track_inputs(seq, float(clip.height), spec)
            for tid, seq in zip(clip.track_ids, clip.tracks, strict=True)
        }
        primary = None if clip.primary is None else clip.track_ids[clip.primary]
        name = path.relative_to(cache_dir).with_suffix("").as_posix()
        out.append(StudyClip(name, a, clip, primary, {k: v for k, v in windows.items() if len(v[0])}))
    return sorted(out, key=lambda c: c.name)


def run_probs(run: Path, clips: Sequence[StudyClip]) -> Probs:
    """Window probabilities of every track of ``clips`` under the run's model (cached in the run)."""
    cached = run / PROBS_FILE
    keys = [f"{c.name}|{tid}" for c in clips for tid in c.windows]
    stamp = np.array((run / "checkpoint.pt").stat().st_mtime_ns)
    if cached.is_file():
        with np.load(cached) as z:
            if set(keys) <= set(z.files) and "checkpoint_mtime" in z.files and z["checkpoint_mtime"] == stamp:
                return {k: z[k] for k in keys}
    import torch

    from training.checkpoint import load_checkpoint
    from training.train import predict

    torch.set_num_threads(1)
    ck = load_checkpoint(run / "checkpoint.pt")
    probs = {
        f"{c.name}|{tid}": predict(ck.model, inputs) for c in clips for tid, (_, inputs) in c.windows.items()
    }
    np.savez_compressed(cached, checkpoint_mtime=stamp, **probs)
    return probs


def clip_decisions(clips: Sequence[StudyClip], probs: Probs, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Per clip: the served decision (confirmed falls) and the single-window rule's."""
    labels = list(ACTIVITIES)
    rule = FallRule.from_labels(labels, FALL_LABELS, cfg.fall_rule)
    single = ClipRule.from_labels(
        labels, FALL_LABELS, cfg.clip_rule.fall_threshold, cfg.clip_rule.min_fall_windows
    )
    out = []
    for c in clips:
        if c.primary not in c.windows:
            out.append(
                {"clip": c.name, "true": c.truth, "served": None, "single_window": None, "fall": False}
            )
            continue
        people = [
            (tid, c.clip.tracks[c.clip.track_ids.index(tid)], ends, probs[f"{c.name}|{tid}"])
            for tid, (ends, _) in c.windows.items()
        ]
        events = clip_events(rule, people, cfg.input.window.seconds, c.clip.width, c.clip.height)
        ends = c.windows[c.primary][0]
        p = probs[f"{c.name}|{c.primary}"]
        served = decide_confirmed(p, ends, ClipRule(rule.fall_classes), events, c.primary)
        out.append(
            {
                "clip": c.name,
                "true": c.truth,
                "served": served.label,
                "fall": served.fall,
                "single_window": decide(p, ends, single).label,
            }
        )
    return out


def accuracy(rows: Sequence[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] == r["true"] for r in rows])) if rows else 0.0


def stats(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, np.float64)
    return {
        "n": len(a),
        "mean": round(float(a.mean()), 4),
        "std": round(float(a.std(ddof=1)), 4) if len(a) > 1 else 0.0,
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
    }


def group_runs(paths: Sequence[Path]) -> dict[str, list[tuple[int, Path]]]:
    """Run folders (given, or found under a given folder) by recipe: name without ``-s<seed>``."""
    runs = []
    for p in paths:
        runs += (
            [p] if (p / "checkpoint.pt").is_file() else sorted(q.parent for q in p.glob("*/checkpoint.pt"))
        )
    groups: dict[str, list[tuple[int, Path]]] = {}
    for run in runs:
        m = _SEED.match(run.name)
        if m:
            groups.setdefault(m.group(1), []).append((int(m.group(2)), run))
    return {k: sorted(v) for k, v in sorted(groups.items())}


def report(
    paths: Sequence[Path],
    ensemble: int = 3,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    cache_dir = cache_dir or REPO_ROOT / "cache" / "skeletons" / "upfall"
    clips_by: dict[tuple[int, ...], list[StudyClip]] = {}
    out: dict[str, Any] = {}
    for recipe, runs in group_runs(paths).items():
        cfg = load_config(runs[0][1] / "config.yaml")
        trials = tuple(cfg.dataset.test_trials)
        if not trials:
            continue
        if trials not in clips_by:
            clips_by[trials] = study_clips(cache_dir, trials, cfg.input)
        clips = clips_by[trials]
        per_seed, probs_by_seed = {}, {}
        for seed, run in runs:
            probs_by_seed[seed] = run_probs(run, clips)
            rows = clip_decisions(clips, probs_by_seed[seed], cfg)
            window = json.loads((run / "metrics.json").read_text()).get("window_top1")
            per_seed[seed] = {
                "served": accuracy(rows, "served"),
                "single_window": accuracy(rows, "single_window"),
                "window_top1": window,
                "wrong": [
                    f"{r['clip']}->{ACTIVITIES[r['served']] if r['served'] is not None else None}"
                    for r in rows
                    if r["served"] != r["true"]
                ],
            }
            r = per_seed[seed]
            log(
                f"{recipe} s{seed}: served {r['served']:.4f} single window {r['single_window']:.4f}"
                f" window {window} wrong {r['wrong']}"
            )
        entry: dict[str, Any] = {
            "test_trials": list(trials),
            "seeds": [s for s, _ in runs],
            "per_seed": per_seed,
            "served": stats([v["served"] for v in per_seed.values()]),
            "single_window": stats([v["single_window"] for v in per_seed.values()]),
            "window_top1": stats(
                [v["window_top1"] for v in per_seed.values() if v["window_top1"] is not None]
            ),
        }
        if ensemble > 1 and len(runs) >= ensemble:
            combos = {}
            for members in itertools.combinations(sorted(probs_by_seed), ensemble):
                mean = {
                    k: np.mean([probs_by_seed[s][k] for s in members], axis=0)
                    for k in probs_by_seed[members[0]]
                }
                combos["+".join(map(str, members))] = accuracy(clip_decisions(clips, mean, cfg), "served")
            entry[f"ensemble{ensemble}"] = {"combinations": combos, "served": stats(list(combos.values()))}
            log(f"{recipe} ensembles of {ensemble}: {entry[f'ensemble{ensemble}']['served']}")
        out[recipe] = entry
    return out


def _pct(s: dict[str, Any]) -> str:
    spread = f"[{100 * s['min']:.1f}-{100 * s['max']:.1f}]"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} {spread} (n={s['n']})"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{'recipe':28s} {'served clip top-1 %':36s} {'single-window clip top-1 %':36s} ensembles (served)"
    )
    for recipe, e in result.items():
        ens = next((v["served"] for k, v in e.items() if k.startswith("ensemble")), None)
        print(
            f"{recipe:28s} {_pct(e['served']):36s} {_pct(e['single_window']):36s} {_pct(ens) if ens else '-'}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="one run per seed: <out>-s<seed>")
    tr.add_argument("--config", type=Path, required=True)
    tr.add_argument("--seeds", type=int, nargs="+", required=True)
    tr.add_argument("--out", type=Path, required=True, help="run folder prefix, e.g. runs/study/corrupt-t1")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tr.add_argument("--data-dir", type=Path, default=None)
    rp = sub.add_parser("report", help="clip accuracy per recipe over its seeds (and seed ensembles)")
    rp.add_argument("runs", type=Path, nargs="+", help="run folders, or folders holding them")
    rp.add_argument("--ensemble", type=int, default=3, help="seeds per ensemble (0: none)")
    rp.add_argument("--cache", type=Path, default=None)
    rp.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        from training.train import main as train_main

        for seed in args.seeds:
            out = args.out.with_name(f"{args.out.name}-s{seed}")
            if (out / "metrics.json").is_file():
                print(f"{out}: done already")
                continue
            sets = [x for s in args.set for x in ("--set", s)]
            data = ["--data-dir", str(args.data_dir)] if args.data_dir else []
            train_main(
                ["--config", str(args.config), "--out", str(out), "--set", f"seed={seed}", *sets, *data]
            )
        return 0
    result = report(args.runs, args.ensemble, args.cache)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
