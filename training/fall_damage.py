"""Fall events on damaged skeletons: confirmed-fall recall and false falls per damage condition.

    python -m training.fall_damage --run "t1->t2 corruption=runs/upfall-stgcnpp-lite-t1/checkpoint.pt" \\
        [--run NAME=CHECKPOINT ...] [--rule NAME=model_dir/manifest.json] [--json out.json]

Each run is tested on its held-out trial(s) (the config's ``test_trials``; both trials for a model
trained on both): every track of every cached clip, as ``POST /recognize`` feeds the fall rule
(``training.falls.clip_recording``: the service's window schedule, every person, one monitor per
clip). The damage (``skeleton.corrupt.CONDITIONS``: missing joints, a missing limb, dropped
frames, positional noise) is applied to the raw MediaPipe landmarks of every track -- what the
pose stage hands on -- so the classifier and the posture part of the rule (standing baseline,
"down") both meet it; a damaged landmark is NaN with visibility 0, as an unseen one. The damage is
seeded per (condition, clip, track); the truth (fall clip, fall time) comes from the undamaged
actor. The rule is the run's own ``fall_rule`` unless ``--rule`` names a manifest whose
``fall_rule`` to use (a fold's rule chosen on its training trial).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.corrupt import CONDITIONS, Corruption
from skeleton.falls import FallRule
from skeleton.layouts import get_layout
from skeleton.manifest import FallRuleSpec
from skeleton.paths import REPO_ROOT
from skeleton.types import SkeletonSequence
from training.falls import _fall_classes, actor_fall_time, clip_recording, evaluate, torch_classifier
from training.skeleton_cache import ClipSkeletons, iter_cache, load_clip
from training.upfall import parse_cache_name

MEDIAPIPE = get_layout("mediapipe33")


def damage_sequence(seq: SkeletonSequence, condition: Corruption,
                    rng: np.random.Generator) -> SkeletonSequence:
    """``seq`` with its image landmarks damaged by ``condition``; whatever it removed is removed
    from the world landmarks and the visibilities too."""
    image = condition.apply(seq.image, MEDIAPIPE, rng)
    gone = ~np.isfinite(image).all(axis=-1) & np.isfinite(seq.image).all(axis=-1)
    world = np.array(seq.world, np.float32, copy=True)
    world[gone] = np.nan
    visibility = np.array(seq.visibility, np.float32, copy=True)
    visibility[gone] = 0.0
    return SkeletonSequence(seq.timestamps, image, world, visibility)


def damage_clip(clip: ClipSkeletons, condition: Corruption, index: int, clip_no: int,
                seed: int = 0) -> ClipSkeletons:
    tracks = [damage_sequence(seq, condition, np.random.default_rng([seed, index, clip_no, k]))
              for k, seq in enumerate(clip.tracks)]
    return replace(clip, tracks=tracks)


def run_damage(checkpoint: Path, cache_dir: Path, spec: FallRuleSpec | None = None,
               conditions: Sequence[Corruption] = CONDITIONS, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per condition: the fall report (``training.falls.evaluate``) of the run on its test trials."""
    from training.checkpoint import load_checkpoint

    classify, input_spec, _ = torch_classifier(checkpoint)
    cfg = load_checkpoint(checkpoint).config
    rule = FallRule(_fall_classes(checkpoint), spec or cfg.fall_rule)
    trials = set(cfg.dataset.test_trials or cfg.dataset.train_trials)
    paths = [p for p in iter_cache(cache_dir) if parse_cache_name(p)[1] in trials]
    names = [p.relative_to(cache_dir).with_suffix("").as_posix() for p in paths]
    clean = [load_clip(p) for p in paths]
    truth = [actor_fall_time(parse_cache_name(p)[0], c) for p, c in zip(paths, clean, strict=True)]
    out: dict[str, dict[str, Any]] = {}
    for k, cond in enumerate(conditions):
        recs = []
        for i, (name, clip, t) in enumerate(zip(names, clean, truth, strict=True)):
            damaged = damage_clip(clip, cond, k, i, seed)
            rec = clip_recording(name, damaged, input_spec, classify, rule.spec.posture_s)
            rec.fall_time = t  # the truth of the undamaged actor
            recs.append(rec)
        rep = evaluate(rule, recs)
        out[cond.name] = {"fall_recall": rep.recall, "falls": f"{rep.falls_detected}/{rep.fall_clips}",
                          "missed": rep.missed,
                          "false_falls": f"{len(rep.false_fall_clips)}/{rep.other_clips}",
                          "false_fall_clips": rep.false_fall_clips}
    return out


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    conds = list(next(iter(results.values())))
    print(f"{'run':32s} " + " ".join(f"{c:>12s}" for c in conds))
    for name, res in results.items():
        cells = [f"{r['falls']} {r['false_falls']}" for r in res.values()]
        print(f"{name:32s} " + " ".join(f"{c:>12s}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fall_damage", description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=CHECKPOINT")
    ap.add_argument("--rule", action="append", default=[], metavar="NAME=MANIFEST",
                    help="use the fall_rule of this manifest.json for run NAME (default: the run's own)")
    ap.add_argument("--cache", type=Path, default=REPO_ROOT / "cache/skeletons/upfall")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rules = {}
    for item in args.rule:
        name, _, path = item.partition("=")
        rules[name] = FallRuleSpec.model_validate(json.loads(Path(path).read_text())["fall_rule"])
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for item in args.run:
        name, _, path = item.partition("=")
        t0 = time.perf_counter()
        results[name] = run_damage(Path(path), args.cache, rules.get(name), seed=args.seed)
        print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(results[name])}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
