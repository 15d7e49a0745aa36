"""UP-Fall offline previews of issue 17: few-shot enrolment with the exported embedding, and "unknown"
for the UP-Fall classifier measured on held-out activities.

    python -m training.upfall_fewshot enrol [--embedding model_zoo/embeddings/<name>]
    python -m training.upfall_fewshot unknown          # trains the two held-out-activity folds if missing
    python -m training.upfall_fewshot set-threshold    # the action sets' "unknown" threshold, on MediaPipe
    python -m training.upfall_fewshot compare-scores   # other open-set scores, the same protocol
    python -m training.upfall_fewshot kinect-outside   # could UTD-MHAD's Kinect actions choose that rule?

``enrol`` does offline what the service will do over HTTP: one example per activity from a trial's
clips (Cam1; the example is the activity's windows -- for a fall clip the windows around the fall,
labelled as the supervised models' training labels them, ``training.upfall.window_label``; for the
others every window of the clip), then every clip of the other trial (both cameras) through the
service's windows, the ONNX embedding, the prototypes (``skeleton.prototypes``), softmax(scale *
cosine) and the service's clip rule (``skeleton.clip.decide`` with the five fall activities as the
fall group, the manifest's default threshold 0.5: nothing tuned on these clips). Both directions
(enrol trial 1 -> test trial 2, and 2 -> 1) are reported.

``unknown`` trains the trial-1 and trial-2 folds of the UP-Fall recipe without two daily activities
(picking up an object, jumping), and scores the held-out trial: known = the 9 trained activities,
unknown = the 2 held out. The score and its threshold are chosen on one fold's held-out trial and
measured on the other fold (both ways); the shipped model gets the mean of the two thresholds.

``set-threshold`` chooses the embedding's ``relative_cosine`` threshold (a window's cosine to its
nearest label over that label's example spread, ``skeleton.prototypes``), which every action set
uses by default, on MediaPipe skeletons (what the service sees) instead of UTD-MHAD's Kinect: a set
enrolled from one trial as ``evaluation.action_sets`` enrols it (each Cam1 clip's first 10 s, one
example per activity) but without two daily activities, for each of the 15 pairs of the six daily
activities; every Cam1 clip of the other trial through the service's clip rule (windows below the
threshold are ``unknown``, ``skeleton.open_set.with_unknown_column``; the mean decides). A clip is
right when an enrolled activity gets its label and a held-out one comes out ``unknown``. The
threshold with the most right clips is chosen on one direction (trial 1 -> 2) and measured on the
other (2 -> 1), and the reverse; the manifest gets the mean of the two choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skeleton.clip import ClipRule, decide
from skeleton.manifest import ModelManifest, load_manifest
from skeleton.open_set import LOGIT_SCORES, clip_score, open_set_score, softmax, with_unknown_column
from skeleton.paths import REPO_ROOT, data_root
from skeleton.preprocess import prepare_window
from skeleton.prototypes import UNKNOWN, PrototypeSet, pool, spread
from training.config import TrainConfig, load_config
from training.metrics import auroc, binary_metrics, youden_threshold
from training.open_set_scores import Score, candidates, relative
from training.upfall import (
    ACTIVITIES,
    FALL_LABELS,
    UpFallClip,
    UpFallDataset,
    clip_window_ends,
    load_upfall,
    window_label,
)

EMBEDDING = REPO_ROOT / "model_zoo" / "embeddings" / "utd-mhad-stgcnpp-lite-embedding"
RECIPE = {
    1: REPO_ROOT / "configs" / "upfall-stgcnpp-lite-t1.yaml",
    2: REPO_ROOT / "configs" / "upfall-stgcnpp-lite-t2.yaml",
}
OUT = REPO_ROOT / "runs" / "upfall-fewshot"
HELD_OUT = (9, 10)  # picking up an object, jumping: daily activities left out of the "unknown" folds
ENROL_CAMERA = 1


class OnnxEmbedder:
    """The exported embedding on ONNX Runtime (CPU, one thread), as the service runs it."""

    def __init__(self, model_dir: Path) -> None:
        import onnxruntime as ort

        self.manifest: ModelManifest = load_manifest(model_dir)
        if self.manifest.kind != "embedding" or self.manifest.embedding is None:
            raise ValueError(f"{model_dir} is not an embedding model (manifest kind {self.manifest.kind!r})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_dir / self.manifest.onnx.file), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        o = self.manifest.onnx
        return np.concatenate(
            [
                self.session.run([o.output_name], {o.input_name: windows[i : i + 64]})[0]
                for i in range(0, len(windows), 64)
            ]
        )


def _clips(cfg: TrainConfig, cache: Path, trial: int) -> list[UpFallClip]:
    return load_upfall(cache, cfg, [trial])


def enrol_and_test(embedder: OnnxEmbedder, cache: Path, enrol_trial: int, test_trial: int) -> dict[str, Any]:
    """One example per activity from ``enrol_trial`` (Cam1), every clip of ``test_trial`` classified."""
    m = embedder.manifest
    assert m.embedding is not None
    base = load_config(RECIPE[enrol_trial])
    cfg = base.model_copy(update={"input": m.input})  # the embedding's layout, coordinates and window
    examples: dict[str, np.ndarray] = {}
    spreads: dict[str, list[float]] = {}
    for clip in _clips(cfg, cache, enrol_trial):
        if clip.camera != ENROL_CAMERA:
            continue
        fall_ends = [
            float(e) for e in clip_window_ends(clip, cfg) if window_label(clip, float(e), cfg) == clip.label
        ]
        if fall_ends:
            windows = np.stack([prepare_window(clip.timestamps, clip.joints, m.input, e) for e in fall_ends])
            vectors = embedder(windows)
            examples[ACTIVITIES[clip.label]] = pool(vectors)[None]
            spreads[ACTIVITIES[clip.label]] = [spread(vectors, examples[ACTIVITIES[clip.label]][0])]
    protos = PrototypeSet.from_examples(examples, spreads)
    labels = list(protos.labels)
    rule = ClipRule.from_labels(labels, [f for f in FALL_LABELS if f in labels])
    threshold = m.open_set.threshold if m.open_set else None
    rows, unknown_windows, total_windows = [], 0, 0
    for clip in _clips(cfg, cache, test_trial):
        ends = clip_window_ends(clip, cfg)
        windows = np.stack([prepare_window(clip.timestamps, clip.joints, m.input, float(e)) for e in ends])
        sims = protos.similarities(embedder(windows))
        d = decide(softmax(sims, m.embedding.logit_scale), ends, rule)
        if threshold is not None:
            unknown_windows += int((protos.relative_scores(sims) < threshold).sum())
        total_windows += len(ends)
        rows.append(
            {
                "clip": clip.name,
                "true": ACTIVITIES[clip.label],
                "pred": labels[d.label],
                "fall": d.fall,
                "is_fall": clip.is_fall,
                "windows": len(ends),
            }
        )
    correct = [r["true"] == r["pred"] for r in rows]
    fall = binary_metrics(np.array([r["is_fall"] for r in rows]), np.array([r["fall"] for r in rows]))
    return {
        "enrol_trial": enrol_trial,
        "test_trial": test_trial,
        "examples": len(examples),
        "clip_top1": float(np.mean(correct)),
        "clips": len(rows),
        "fall": fall,
        "windows_below_threshold": unknown_windows / max(1, total_windows),
        "threshold": threshold,
        "per_clip": rows,
    }


DAILY = (6, 7, 8, 9, 10, 11)  # walking .. laying: the activities a set is enrolled without, in pairs
ENROL_SECONDS = 10.0  # evaluation.action_sets' example: each clip's first 10 s
THRESHOLD_GRID = tuple(round(0.025 * i, 3) for i in range(-8, 61))  # relative cosine -0.2 .. 1.5


Vectors = dict[int, tuple[np.ndarray, np.ndarray]]


def _clip_vectors(embedder: OnnxEmbedder, cache: Path, trial: int) -> Vectors:
    """Activity -> (window end times, window embeddings) of the trial's enrolment-camera clips."""
    m = embedder.manifest
    cfg = load_config(RECIPE[trial]).model_copy(update={"input": m.input})
    out = {}
    for clip in _clips(cfg, cache, trial):
        if clip.camera == ENROL_CAMERA:
            ends = clip_window_ends(clip, cfg)
            w = np.stack([prepare_window(clip.timestamps, clip.joints, m.input, float(e)) for e in ends])
            out[clip.activity] = (ends - float(clip.timestamps[0]), embedder(w))
    return out


def clip_labels(
    names: list[str], sims: np.ndarray, scores: np.ndarray, logit_scale: float, thresholds: np.ndarray
) -> list[str]:
    """The clip label at each threshold: softmax(scale x cosine) per window, ``unknown`` where the
    window's open-set score is below the threshold, mean over the clip, argmax (``names``: the
    labels, then ``unknown``)."""
    probs = softmax(sims, logit_scale)
    return [names[int(with_unknown_column(probs, scores < t).mean(axis=0).argmax())] for t in thresholds]


def set_threshold(embedder: OnnxEmbedder, cache: Path, seconds: float = ENROL_SECONDS) -> dict[str, Any]:
    """Choose the action sets' threshold across UP-Fall trials (module docstring)."""
    m = embedder.manifest
    assert m.embedding is not None
    vecs = {t: _clip_vectors(embedder, cache, t) for t in (1, 2)}
    return {"embedding": m.name, **choose_set_threshold(vecs, m.embedding.logit_scale, seconds)}


def choose_set_threshold(
    vecs: dict[int, Vectors], logit_scale: float, seconds: float, score: Score = relative
) -> dict[str, Any]:
    """``vecs``: trial -> activity -> (window ends, window embeddings). Per direction, the grid
    threshold with the most right clips over the held-out pairs (the middle one of ties), measured
    on the other direction; the result's ``threshold`` is the mean of the two choices. ``score``:
    the windows' open-set score (``training.open_set_scores``; the service's by default)."""
    grid = np.array(THRESHOLD_GRID)
    held_outs = [(), *itertools.combinations(DAILY, 2)]
    right: dict[tuple[int, int], np.ndarray] = {}
    full: dict[tuple[int, int], list[list[str]]] = {}
    for a, b in ((1, 2), (2, 1)):
        right[a, b] = np.zeros((len(held_outs), len(grid)))
        first = {str(act): v[ends <= seconds] for act, (ends, v) in vecs[a].items()}  # the examples' windows
        for h, held in enumerate(held_outs):
            keep = [k for k in first if int(k) not in held]
            scorer = score([first[k] for k in keep])
            for act, (_, v) in vecs[b].items():
                sims, scores = scorer(v)
                labels = clip_labels([*keep, UNKNOWN], sims, scores, logit_scale, grid)
                truth = UNKNOWN if act in held else str(act)
                right[a, b][h] += [lab == truth for lab in labels]
                if not held:
                    full.setdefault((a, b), []).append(labels)
    result: dict[str, Any] = {
        "logit_scale": logit_scale,
        "held_out_pairs": len(held_outs) - 1,
        "grid": grid.tolist(),
        "folds": {},
    }
    chosen = {}
    for (a, b), (c, d) in (((1, 2), (2, 1)), ((2, 1), (1, 2))):
        hits = right[a, b][1:].sum(axis=0)  # the held-out sets only
        best = np.flatnonzero(hits == hits.max())
        i = int(best[len(best) // 2])  # the middle of the best thresholds
        chosen[a, b] = float(grid[i])
        got = np.array(full[c, d])[:, i]
        names = [str(act) for act in vecs[d]]
        falls = [j for j, act in enumerate(vecs[d]) if act <= len(FALL_LABELS)]
        fall_names = {str(f) for f in range(1, len(FALL_LABELS) + 1)}
        recall = float(np.mean([got[j] in fall_names for j in falls])) if falls else None
        result["folds"][f"chosen on trial {a} -> {b}, measured on trial {c} -> {d}"] = {
            "threshold": chosen[a, b],
            "chosen_on_right": float(hits[i] / (len(held_outs) - 1) / len(vecs[b])),
            "held_out_right": float(right[c, d][1:, i].sum() / (len(held_outs) - 1) / len(vecs[d])),
            "full_set_top1": float(np.mean(got == np.array(names))),
            "full_set_fall_recall": recall,
            "full_set_unknown": int(np.sum(got == UNKNOWN)),
        }
    result["threshold"] = float(np.mean(list(chosen.values())))
    return result


def compare_scores(embedder: OnnxEmbedder, cache: Path, seconds: float = ENROL_SECONDS) -> dict[str, Any]:
    """Every candidate of ``training.open_set_scores`` through ``choose_set_threshold``'s protocol
    (each with its own threshold); a candidate would replace the shipped score only if its held-out
    right is higher in both directions (the rule fixed before round 7 measured them)."""
    m = embedder.manifest
    assert m.embedding is not None
    vecs = {t: _clip_vectors(embedder, cache, t) for t in (1, 2)}
    members = len(m.ensemble.members) if m.ensemble else 1
    rows: dict[str, dict[str, Any]] = {}
    for name, fn in candidates(members).items():
        found = choose_set_threshold(vecs, m.embedding.logit_scale, seconds, fn)
        rows[name] = {
            fold: {k: round(f[k], 4) for k in ("threshold", "chosen_on_right", "held_out_right")}
            for fold, f in found["folds"].items()
        }
    shipped = next(iter(rows.values()))
    better = [
        name
        for name, r in rows.items()
        if all(r[fold]["held_out_right"] > shipped[fold]["held_out_right"] for fold in shipped)
    ]
    return {"embedding": m.name, "scores": rows, "better_in_both_directions": better}


def kinect_outside(embedder: OnnxEmbedder, cache: Path, seconds: float = ENROL_SECONDS) -> dict[str, Any]:
    """Could UTD-MHAD choose the sets' rule? Its Kinect skeletons (test subjects 2, 4, 6, 8: people
    the embedding never saw) as actions outside a set enrolled as ``set_threshold`` enrols it (all 11
    activities), against the other trial's MediaPipe windows: each group's median relative cosine and
    the share of its windows at or above the shipped threshold."""
    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    m = embedder.manifest
    threshold = m.open_set.threshold if m.open_set else 0.0
    vecs = {t: _clip_vectors(embedder, cache, t) for t in (1, 2)}
    utd: dict[int, list[np.ndarray]] = {}
    for clip in load_utd_mhad(data_root(), subjects={2, 4, 6, 8}):
        utd.setdefault(clip.action, []).append(embedder(utd_windows(clip, m.input)))
    out: dict[str, Any] = {"threshold": threshold, "folds": {}}
    for a, b in ((1, 2), (2, 1)):
        scorer = relative([v[ends <= seconds] for _, (ends, v) in sorted(vecs[a].items())])

        def summary(windows: np.ndarray, scorer: Any = scorer) -> dict[str, float]:
            score = scorer(windows)[1]
            passing = float(np.mean(score >= threshold))
            return {"median": round(float(np.median(score)), 3), "passing": round(passing, 3)}

        out["folds"][f"set of trial {a}"] = {
            f"upfall trial {b}": {ACTIVITIES[act - 1]: summary(v) for act, (_, v) in sorted(vecs[b].items())},
            "utd-mhad": {str(act): summary(np.concatenate(v)) for act, v in sorted(utd.items())},
        }
    return out


def unknown_folds(cache: Path, out: Path) -> dict[str, Any]:
    """Train (if missing) the two held-out-activity folds, score their held-out trials, cross-validate."""
    from training.checkpoint import load_checkpoint
    from training.datasets import build_dataset
    from training.train import train

    keep = [a for a in range(1, len(ACTIVITIES) + 1) if a not in HELD_OUT]
    scores: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for trial, recipe in RECIPE.items():
        run = out / f"unknown-t{trial}"
        cfg = load_config(recipe, {"name": f"upfall-unknown-t{trial}", "threads": 1, "dataset.classes": keep})
        if not (run / "checkpoint.pt").is_file():
            t0 = time.perf_counter()
            train(cfg, run, REPO_ROOT, print)
            print(f"[unknown-t{trial}] trained in {time.perf_counter() - t0:.0f} s", flush=True)
        model = load_checkpoint(run / "checkpoint.pt").model
        ds = build_dataset(cfg, REPO_ROOT, REPO_ROOT)
        assert isinstance(ds, UpFallDataset)
        with torch.no_grad():
            logits = np.concatenate(
                [
                    model(torch.from_numpy(ds.all_test_inputs[i : i + 128])).numpy()
                    for i in range(0, len(ds.all_test_inputs), 128)
                ]
            )
        clip_unknown = np.array([c.activity in HELD_OUT for c in ds.test_clips])
        win_unknown = clip_unknown[ds.test_owner]
        scores[trial] = {}
        for score in LOGIT_SCORES:
            win = open_set_score(score, logits)
            clip_scores = np.array([clip_score(win[ds.test_owner == ci]) for ci in range(len(ds.test_clips))])
            scores[trial][score] = {
                "window_known": win[~win_unknown],
                "window_unknown": win[win_unknown],
                "known": clip_scores[~clip_unknown],
                "unknown": clip_scores[clip_unknown],
            }
    # The score: best mean window AUROC of the two folds, each on its own held-out trial; then each
    # fold's threshold (Youden's J on its own held-out trial) is measured on the other fold.
    auc = {
        s: [auroc(scores[t][s]["window_known"], scores[t][s]["window_unknown"]) for t in RECIPE]
        for s in LOGIT_SCORES
    }
    best = max(auc, key=lambda s: float(np.mean(auc[s])))
    result: dict[str, Any] = {
        "held_out": [ACTIVITIES[a - 1] for a in HELD_OUT],
        "score": best,
        "calibration_window_auroc": auc,
        "folds": {},
    }
    thresholds = {}
    for chosen_on, measured_on in ((1, 2), (2, 1)):
        cal = scores[chosen_on][best]
        thr = youden_threshold(cal["window_known"], cal["window_unknown"])
        thresholds[chosen_on] = thr
        test = scores[measured_on][best]
        result["folds"][f"threshold from fold t{chosen_on}, measured on fold t{measured_on}"] = {
            "threshold": thr,
            "window_auroc": auroc(test["window_known"], test["window_unknown"]),
            "clip_auroc": auroc(test["known"], test["unknown"]),
            "window_coverage": float((test["window_known"] >= thr).mean()),
            "window_unknown_rejected": float((test["window_unknown"] < thr).mean()),
            "clip_coverage": float((test["known"] >= thr).mean()),
            "clip_unknown_rejected": float((test["unknown"] < thr).mean()),
            "known_clips": len(test["known"]),
            "unknown_clips": len(test["unknown"]),
            "known_windows": len(test["window_known"]),
            "unknown_windows": len(test["window_unknown"]),
        }
    result["shipped"] = {"score": best, "threshold": float(np.mean(list(thresholds.values())))}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.upfall_fewshot", description=__doc__.splitlines()[0]
    )
    commands = ["enrol", "unknown", "set-threshold", "compare-scores", "kinect-outside"]
    ap.add_argument("command", choices=commands)
    ap.add_argument("--embedding", type=Path, default=EMBEDDING)
    ap.add_argument("--cache", type=Path, default=REPO_ROOT / "cache" / "skeletons" / "upfall")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "enrol":
        emb = OnnxEmbedder(args.embedding)
        folds = [enrol_and_test(emb, args.cache, 1, 2), enrol_and_test(emb, args.cache, 2, 1)]
        (args.out / "enrol.json").write_text(
            json.dumps({"embedding": emb.manifest.name, "folds": folds}, indent=1)
        )
        for f in folds:
            print(
                f"enrol trial {f['enrol_trial']} -> test trial {f['test_trial']}: clip top-1 "
                f"{100 * f['clip_top1']:.1f} % ({f['clips']} clips), fall P/R {f['fall']['precision']} / "
                f"{f['fall']['recall']}, windows below the unknown threshold "
                f"{100 * f['windows_below_threshold']:.1f} %"
            )
        return 0
    if args.command == "compare-scores":
        compared = compare_scores(OnnxEmbedder(args.embedding), args.cache)
        (args.out / "compare-scores.json").write_text(json.dumps(compared, indent=1))
        for name, r in compared["scores"].items():
            print(f"{name:>48}: " + ", ".join(
                f"{f['threshold']:.3f} -> {100 * f['held_out_right']:.1f} %" for f in r.values()))
        print("better in both directions:", compared["better_in_both_directions"] or "none")
        return 0
    if args.command == "kinect-outside":
        found = kinect_outside(OnnxEmbedder(args.embedding), args.cache)
        (args.out / "kinect-outside.json").write_text(json.dumps(found, indent=1))
        for fold, groups in found["folds"].items():
            for group, rows in groups.items():
                medians = [r["median"] for r in rows.values()]
                passing = max(r["passing"] for r in rows.values())
                print(f"{fold}, {group}: median relative cosine {min(medians):.3f} .. {max(medians):.3f}, "
                      f"most windows >= {found['threshold']} in one group {100 * passing:.0f} %")
        return 0
    if args.command == "set-threshold":
        found = set_threshold(OnnxEmbedder(args.embedding), args.cache)
        (args.out / "set-threshold.json").write_text(json.dumps(found, indent=1))
        print(json.dumps({k: v for k, v in found.items() if k != "grid"}, indent=1))
        return 0
    result = unknown_folds(args.cache, args.out)
    (args.out / "unknown.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
