"""Fall events (``skeleton.falls``) on UP-Fall: the rule's defaults chosen by cross-validation, and
what they give (fall recall, false falls, fall-time error, false alarms per hour).

    python -m training.falls cv [--extra-cache DIR] [--json artifacts/falls/cv.json] [--write]

Fold t1->t2: the model trained on trial 1 (``runs/upfall-stgcnpp-lite-t1``), the rule's parameters
chosen on trial-1 data (``choose_spec``), tested on trial 2; fold t2->t1 the reverse. The shipped
model's defaults come from the same procedure on both trials. Every track of every clip is fed to
one ``FallMonitor`` per recording, as a stream would feed it. False alarms per hour: the daily
activities (6-11) of the test trial joined end to end per camera (``training.joined``; as
consecutive clips of one stream, and with the actor's track continued across the joins) plus the
real clips of ``<data>/clips`` (skeletons extracted by ``python -m training.extract``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.clip import window_ends
from skeleton.falls import (
    FallRule,
    FallWindow,
    Posture,
    detect_falls,
    frame_postures,
    track_windows,
)
from skeleton.manifest import FallRuleSpec, InputSpec
from skeleton.paths import REPO_ROOT
from skeleton.preprocess import prepare_window, sequence_to_layout
from skeleton.types import SkeletonSequence
from training.joined import clip_duration, concatenate_primary, daily_names, join_clips
from training.skeleton_cache import ClipSkeletons, iter_cache, load_clip
from training.upfall import ACTIVITIES, FALL_LABELS, detect_fall_time, parse_cache_name

MIN_TRACK_FRAMES = 3  # as the clip pipeline: shorter tracks are detector blips
# Posture statistics for the down thresholds: a fallen person has settled this long after the
# fall (a window's last half second then starts after the ~0.5 s drop).
SETTLED_S = 1.0
UPRIGHT_ACTIVITIES = (6, 7, 8, 9, 10)  # walking, standing, sitting, picking up, jumping
CONFIRM_GRID = tuple(np.round(np.arange(0.25, 6.01, 0.25), 2))
THRESHOLD_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
# Not tuned (UP-Fall shows nobody getting up, and one broken track): see docs/falls.md.
EXPIRE_EXTRA_S = 4.0

Classifier = Callable[[np.ndarray], np.ndarray]


@dataclass
class Recording:
    """One recording's tracks as the rule sees them: a clip, or a joined stream."""

    name: str
    duration: float
    tracks: dict[int, list[FallWindow]]
    activity: int = 0
    trial: int = 0
    camera: int = 0
    fall_time: float | None = None  # falls: the moment detected from the actor's skeleton
    primary: int | None = None

    @property
    def is_fall(self) -> bool:
        return self.fall_time is not None


def track_inputs(seq: SkeletonSequence, height: float, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """A track's windows as a stream cuts them (``skeleton.clip.window_ends`` over its sightings,
    frames up to its last one): their ends (W,) and model inputs (W, C, T, V); none for a blip."""
    seen = np.isfinite(seq.image[:, :, :2]).all(axis=2).any(axis=1)  # damaged frames keep their other joints
    if seen.sum() < MIN_TRACK_FRAMES:
        return np.zeros(0), np.zeros((0, spec.channels, spec.window.length, 0), np.float32)
    idx = np.nonzero(seen)[0]
    first, last = int(idx[0]), int(idx[-1]) + 1
    ts = seq.timestamps[first:last]
    joints = sequence_to_layout(seq, spec, float(height))[first:last]
    w = spec.window
    ends = window_ends(float(ts[0]), float(ts[-1]), w.seconds, w.stride / w.fps)
    return ends, np.stack([prepare_window(ts, joints, spec, float(e)) for e in ends])


def sequence_windows(seq: SkeletonSequence, width: float, height: float, spec: InputSpec,
                     classify: Classifier, posture_s: float) -> list[FallWindow]:
    """``track_inputs`` classified, with their postures. Empty for a detector blip."""
    ends, inputs = track_inputs(seq, height, spec)
    if not len(ends):
        return []
    postures = frame_postures(seq.timestamps, seq.image, seq.visibility, width, height)
    return track_windows(postures, ends, classify(inputs), spec.window.seconds, posture_s)


def clip_recording(name: str, clip: ClipSkeletons, spec: InputSpec, classify: Classifier,
                   posture_s: float) -> Recording:
    """Every track of a cached clip; UP-Fall names (Activity{a}/Trial{t}Cam{c}) set the truth."""
    tracks = {}
    for tid, seq in zip(clip.track_ids, clip.tracks, strict=True):
        ws = sequence_windows(seq, clip.width, clip.height, spec, classify, posture_s)
        if ws:
            tracks[tid] = ws
    rec = Recording(name, clip_duration(clip), tracks,
                    primary=None if clip.primary is None else clip.track_ids[clip.primary])
    try:
        rec.activity, rec.trial, rec.camera = parse_cache_name(Path(name + ".npz"))
    except ValueError:
        return rec
    rec.fall_time = actor_fall_time(rec.activity, clip)
    return rec


def actor_fall_time(activity: int, clip: ClipSkeletons) -> float | None:
    """When the actor of a cached UP-Fall clip of ``activity`` falls (None: not a fall activity,
    or no actor): the truth a fall event is scored against."""
    actor = clip.primary_track
    if actor is None or ACTIVITIES[activity - 1] not in FALL_LABELS:
        return None
    return detect_fall_time(actor, float(clip.height))


def shifted(w: FallWindow, dt: float) -> FallWindow:
    """The same window ``dt`` seconds later (a clip placed inside a longer recording)."""
    return replace(w, start=w.start + dt, end=w.end + dt,
                   descent_time=None if w.descent_time is None else w.descent_time + dt)


def consecutive_stream(name: str, recs: Sequence[Recording], offsets: Sequence[float]) -> Recording:
    """Clips played one after the other in one stream, every clip with its own tracks."""
    tracks = {}
    for i, (rec, dt) in enumerate(zip(recs, offsets, strict=True)):
        for tid, ws in rec.tracks.items():
            tracks[i * 1000 + tid] = [shifted(w, dt) for w in ws]
    return Recording(name, float(offsets[-1]) + recs[-1].duration, tracks)


def continued_stream(name: str, clips: Sequence[ClipSkeletons], recs: Sequence[Recording],
                     spec: InputSpec, classify: Classifier, posture_s: float) -> Recording:
    """Clips played one after the other, the actor's track continued across the joins (windows
    straddle the cuts); the other tracks as in ``consecutive_stream``."""
    parts = join_clips([r.name for r in recs], clips)
    offsets = [p.offset for p in parts]
    stream = consecutive_stream(name, recs, offsets)
    for i, rec in enumerate(recs):
        if rec.primary is not None:
            stream.tracks.pop(i * 1000 + rec.primary, None)
    actor = concatenate_primary(clips, parts)
    stream.tracks[-1] = sequence_windows(actor, clips[0].width, clips[0].height, spec, classify, posture_s)
    return stream


# ----------------------------------------------------------------------------------- evaluation


@dataclass
class FallReport:
    """What a rule gives on a set of recordings (times in seconds)."""

    fall_clips: int = 0
    falls_detected: int = 0
    other_clips: int = 0
    false_fall_clips: list[str] = field(default_factory=list)
    early_events: list[str] = field(default_factory=list)  # an event before the fall itself
    extra_fall_events: int = 0  # a second fall event on a fall clip
    fall_time_errors: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # event time - fall time
    handovers: int = 0
    recovered_on_falls: int = 0
    stream_hours: float = 0.0
    stream_false_falls: int = 0
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.falls_detected / self.fall_clips if self.fall_clips else None

    def summary(self) -> dict[str, Any]:
        err = np.abs(self.fall_time_errors) if self.fall_time_errors else np.zeros(0)
        lat = np.asarray(self.latencies)
        return {
            "fall_recall": self.recall, "falls": f"{self.falls_detected}/{self.fall_clips}",
            "missed": self.missed,
            "false_falls": f"{len(self.false_fall_clips)}/{self.other_clips}",
            "false_fall_clips": self.false_fall_clips,
            "early_events": self.early_events, "extra_fall_events": self.extra_fall_events,
            "fall_time_error_mean_s": round(float(err.mean()), 3) if err.size else None,
            "fall_time_error_max_s": round(float(err.max()), 3) if err.size else None,
            "latency_mean_s": round(float(lat.mean()), 3) if lat.size else None,
            "latency_max_s": round(float(lat.max()), 3) if lat.size else None,
            "handovers": self.handovers, "recovered_on_falls": self.recovered_on_falls,
            "stream_hours": round(self.stream_hours, 4), "stream_false_falls": self.stream_false_falls,
            "false_alarms_per_hour": (round(self.stream_false_falls / self.stream_hours, 3)
                                      if self.stream_hours else None),
        }


def evaluate(rule: FallRule, clips: Iterable[Recording], streams: Iterable[Recording] = ()) -> FallReport:
    """Events of every recording under ``rule``: falls found and missed, false falls, timing."""
    rep = FallReport()
    for rec in clips:
        events = detect_falls(rec.tracks, rule)
        falls = [e for e in events if e.kind == "fall"]
        if not rec.is_fall:
            rep.other_clips += 1
            if falls:
                rep.false_fall_clips.append(rec.name)
            continue
        assert rec.fall_time is not None
        rep.fall_clips += 1
        rep.early_events += [f"{rec.name}@{e.time:.2f}" for e in events if e.time < rec.fall_time]
        rep.recovered_on_falls += sum(e.kind == "recovered" for e in events)
        if not falls:
            rep.missed.append(rec.name)
            continue
        rep.falls_detected += 1
        rep.extra_fall_events += len(falls) - 1
        rep.handovers += falls[0].handed_over_from is not None
        rep.fall_time_errors.append(falls[0].fall_time - rec.fall_time)
        rep.latencies.append(falls[0].time - rec.fall_time)
    for rec in streams:
        rep.stream_hours += rec.duration / 3600
        rep.stream_false_falls += sum(e.kind == "fall" for e in detect_falls(rec.tracks, rule))
    return rep


def feasible(rule: FallRule, clips: Sequence[Recording], streams: Sequence[Recording]) -> bool:
    """Every fall found, no false fall on any other clip or stream."""
    rep = evaluate(rule, clips, streams)
    return rep.recall == 1.0 and not rep.false_fall_clips and rep.stream_false_falls == 0


# ------------------------------------------------------------------------------------ selection


def posture_margins(clips: Sequence[Recording], rule: FallRule) -> dict[str, float]:
    """Down thresholds half-way between what upright daily activities show (torso angle, shoulder
    drop within a window, every track) and what the fallen actors show once settled."""
    up_angle, up_drop, down_angle, down_drop = [], [], [], []
    for rec in clips:
        if rec.activity in UPRIGHT_ACTIVITIES:
            for ws in rec.tracks.values():
                up_angle += [w.after.torso_angle for w in ws]
                up_drop += [w.after.drop_from(w.before) for w in ws]
        elif rec.is_fall and rec.primary in rec.tracks:
            assert rec.fall_time is not None
            ws = rec.tracks[rec.primary]
            standing = _standing_posture(ws, rec.fall_time, rule.spec.posture_s)
            for w in ws:
                if w.end >= rec.fall_time + SETTLED_S:
                    down_angle.append(w.after.torso_angle)
                    if standing is not None:
                        down_drop.append(w.after.drop_from(standing))
    return {
        "upright_angle_max": _nanmax(up_angle), "fallen_angle_min": _nanmin(down_angle),
        "upright_drop_max": _nanmax(up_drop), "fallen_drop_min": _nanmin(down_drop),
    }


def _standing_posture(ws: Sequence[FallWindow], fall_time: float, posture_s: float) -> Posture | None:
    """The actor before the fall: the before-posture of the last window whose first ``posture_s``
    seconds end before the fall."""
    before = [w for w in ws if w.start + posture_s <= fall_time]
    return before[-1].before if before else None


def _nanmax(x: list[float]) -> float:
    a = np.asarray(x, np.float64)
    return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")


def _nanmin(x: list[float]) -> float:
    a = np.asarray(x, np.float64)
    return float(np.nanmin(a)) if np.isfinite(a).any() else float("nan")


def _centre(values: Sequence[float], ok: Sequence[bool]) -> tuple[float | None, list[float]]:
    good = [v for v, k in zip(values, ok, strict=True) if k]
    return ((min(good) + max(good)) / 2 if good else None), good


def choose_spec(fall_classes: tuple[int, ...], clips: Sequence[Recording], streams: Sequence[Recording],
                base: FallRuleSpec | None = None) -> tuple[FallRuleSpec, dict[str, Any]]:
    """The rule's parameters from one set of recordings (the selection trial), margin first:

    1. down_angle / down_drop: half-way between upright daily activities and settled fallen actors;
    2. confirm_s (= recover_s): the centre of the range of confirmation times that find every fall
       and raise no false fall, at fall_threshold 0.5;
    3. fall_threshold: the centre of the feasible range at that confirmation time.
    """
    spec = base or FallRuleSpec()
    m = posture_margins(clips, FallRule(fall_classes, spec))
    spec = spec.model_copy(update={
        "down_angle": round((m["upright_angle_max"] + m["fallen_angle_min"]) / 2, 1),
        "down_drop": round((m["upright_drop_max"] + m["fallen_drop_min"]) / 2, 2),
        "fall_threshold": 0.5,
    })

    def with_confirm(s: FallRuleSpec, c: float) -> FallRuleSpec:
        return s.model_copy(update={"confirm_s": c, "recover_s": c, "expire_s": c + EXPIRE_EXTRA_S})

    ok_c = [feasible(FallRule(fall_classes, with_confirm(spec, c)), clips, streams) for c in CONFIRM_GRID]
    confirm, good_c = _centre(CONFIRM_GRID, ok_c)
    if confirm is None:
        raise RuntimeError("no confirmation time finds every fall without a false fall at threshold 0.5")
    spec = with_confirm(spec, round(confirm * 4) / 4)
    ok_t = [feasible(FallRule(fall_classes, spec.model_copy(update={"fall_threshold": t})), clips, streams)
            for t in THRESHOLD_GRID]
    threshold, good_t = _centre(THRESHOLD_GRID, ok_t)
    if threshold is None:
        raise RuntimeError("no fall threshold is feasible")
    spec = spec.model_copy(update={"fall_threshold": round(threshold * 20) / 20})
    trace = {**{k: round(v, 3) for k, v in m.items()},
             "confirm_feasible": [min(good_c), max(good_c)], "threshold_feasible": [min(good_t), max(good_t)]}
    return spec, trace


# ------------------------------------------------------------------------------------ the folds


@dataclass
class ModelData:
    """One model's view of every recording: UP-Fall clips by trial, joined streams, other clips."""

    clips: dict[int, list[Recording]]
    streams: dict[str, dict[int, list[Recording]]]  # variant -> trial -> streams
    extra: list[Recording]
    seconds: float


def torch_classifier(checkpoint: Path) -> tuple[Classifier, InputSpec, list[str]]:
    import torch

    from training.checkpoint import load_checkpoint
    from training.train import predict

    torch.set_num_threads(1)
    ck = load_checkpoint(checkpoint)
    return (lambda x: predict(ck.model, x)), ck.config.input, ck.labels


def model_data(checkpoint: Path, cache_dir: Path, extra_dir: Path | None, posture_s: float) -> ModelData:
    """Classify every track of every cached UP-Fall clip (and of the extra clips) with one model."""
    t0 = time.perf_counter()
    classify, spec, _ = torch_classifier(checkpoint)
    cached = {_cache_name(p, cache_dir): load_clip(p) for p in iter_cache(cache_dir)}
    recs = {name: clip_recording(name, clip, spec, classify, posture_s) for name, clip in cached.items()}
    clips: dict[int, list[Recording]] = {}
    for rec in recs.values():
        clips.setdefault(rec.trial, []).append(rec)
    streams: dict[str, dict[int, list[Recording]]] = {"consecutive": {}, "continued": {}}
    for trial in sorted(clips):
        for camera in sorted({r.camera for r in clips[trial]}):
            names = [n for n in daily_names(trial, camera) if n in recs]
            parts = join_clips(names, [cached[n] for n in names])
            label = f"daily/Trial{trial}Cam{camera}"
            streams["consecutive"].setdefault(trial, []).append(
                consecutive_stream(label, [recs[n] for n in names], [p.offset for p in parts]))
            streams["continued"].setdefault(trial, []).append(
                continued_stream(label, [cached[n] for n in names], [recs[n] for n in names], spec, classify,
                                 posture_s))
    extra = []
    if extra_dir is not None:
        for p in iter_cache(extra_dir):
            extra.append(clip_recording(_cache_name(p, extra_dir), load_clip(p), spec, classify, posture_s))
    return ModelData(clips, streams, extra, time.perf_counter() - t0)


def _cache_name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def recovery_check(rule: FallRule, clips: Sequence[Recording], up_activity: int = 7) -> dict[str, Any]:
    """Fall, then up again: the track that raised each fall clip's fall continued, from its next
    window on, by the actor of the same trial and camera doing ``up_activity`` (standing). Counts
    the clips that give exactly one fall then one recovery, and how long after the cut it came."""
    by_key = {(r.activity, r.trial, r.camera): r for r in clips}
    done, delays, n = 0, [], 0
    for rec in clips:
        up = by_key.get((up_activity, rec.trial, rec.camera))
        if not rec.is_fall or up is None or up.primary not in up.tracks:
            continue
        n += 1
        falls = [e for e in detect_falls(rec.tracks, rule) if e.kind == "fall"]
        if not falls:
            continue
        tracks = dict(rec.tracks)
        ws, up_ws = tracks[falls[0].track_id], up.tracks[up.primary]
        cut = ws[-1].end + (up_ws[1].end - up_ws[0].end)  # the next window is the standing clip's first
        tracks[falls[0].track_id] = [*ws, *(shifted(w, cut - up_ws[0].end) for w in up_ws)]
        events = detect_falls(tracks, rule)
        if [e.kind for e in events] == ["fall", "recovered"]:
            done += 1
            delays.append(events[1].time - cut)
    return {"fall_then_recovered": f"{done}/{n}",
            "recovered_after_cut_s": [round(min(delays), 2), round(max(delays), 2)] if delays else None}


def single_window_alarms(rule: FallRule, recs: Iterable[Recording], threshold: float = 0.6) -> dict[str, Any]:
    """The rule before fall events (``skeleton.clip``: one window at ``threshold`` is a fall), on
    every track as a stream sees them: recordings with an alarm, and alarm windows in all."""
    falls = others = fall_hits = other_hits = windows = 0
    for rec in recs:
        over = sum(rule.fall_probability(w.probs) >= threshold for ws in rec.tracks.values() for w in ws)
        if rec.is_fall:
            falls, fall_hits = falls + 1, fall_hits + (over > 0)
        else:
            others, other_hits, windows = others + 1, other_hits + (over > 0), windows + over
    return {"threshold": threshold, "fall_clips_alarmed": f"{fall_hits}/{falls}",
            "other_recordings_alarmed": f"{other_hits}/{others}", "alarm_windows_on_others": windows}


SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def threshold_sweep(rule: FallRule, clips: Sequence[Recording],
                    others: Sequence[Recording]) -> list[dict[str, Any]]:
    """For information (nothing is chosen on it): at each fall threshold, falls found and non-fall
    recordings (``clips``' others and ``others``) with a false fall, confirmed (``rule`` otherwise
    unchanged) and by the single-window rule, on every track."""
    out = []
    for t in SWEEP:
        swept = FallRule(rule.fall_classes, rule.spec.model_copy(update={"fall_threshold": t}))
        rep = evaluate(swept, [*clips, *others])
        single = single_window_alarms(rule, [*clips, *others], t)
        out.append({"threshold": t,
                    "confirmed": {"falls": f"{rep.falls_detected}/{rep.fall_clips}",
                                  "false": f"{len(rep.false_fall_clips)}/{rep.other_clips}"},
                    "single_window": {"falls": single["fall_clips_alarmed"],
                                      "false": single["other_recordings_alarmed"]}})
    return out


def _fold_report(rule: FallRule, data: ModelData, trials: Sequence[int]) -> dict[str, Any]:
    clips = [r for t in trials for r in data.clips.get(t, [])]
    out: dict[str, Any] = {"clips": evaluate(rule, clips).summary(), "recovery": recovery_check(rule, clips)}
    for variant, by_trial in data.streams.items():
        streams = [s for t in trials for s in by_trial.get(t, [])]
        out[f"daily_{variant}"] = evaluate(rule, [], streams).summary()
    out["other_clips"] = evaluate(rule, [], data.extra).summary()
    out["single_window_rule"] = single_window_alarms(rule, [*clips, *data.extra])
    out["threshold_sweep"] = threshold_sweep(
        rule, clips, [*data.extra, *(s for t in trials for s in data.streams["continued"].get(t, []))])
    hours = sum(s.duration for t in trials for s in data.streams["consecutive"].get(t, [])) / 3600
    hours += sum(r.duration for r in data.extra) / 3600
    false = (out["daily_consecutive"]["stream_false_falls"] + out["other_clips"]["stream_false_falls"])
    out["false_alarms_per_hour"] = {"hours": round(hours, 4), "false_falls": false,
                                    "per_hour": round(false / hours, 3) if hours else None}
    return out


def cross_validate(runs: dict[str, Path], shipped: Path, cache_dir: Path, extra_dir: Path | None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Both folds (rule chosen on the model's own training trial, tested on the other) and the
    shipped model (rule chosen on both trials: the defaults)."""
    posture_s = FallRuleSpec().posture_s
    folds = {"t1->t2": (runs["t1"], [1], [2]), "t2->t1": (runs["t2"], [2], [1])}
    result: dict[str, Any] = {}
    for fold, (ckpt, sel, test) in folds.items():
        data = model_data(ckpt / "checkpoint.pt", cache_dir, extra_dir, posture_s)
        classes = _fall_classes(ckpt / "checkpoint.pt")
        sel_clips = [r for t in sel for r in data.clips[t]]
        sel_streams = [s for t in sel for s in data.streams["consecutive"][t] + data.streams["continued"][t]]
        spec, trace = choose_spec(classes, sel_clips, sel_streams)
        rule = FallRule(classes, spec)
        result[fold] = {"spec": spec.model_dump(), "selection": trace, "test": _fold_report(rule, data, test),
                        "selection_trial": _fold_report(rule, data, sel), "seconds": round(data.seconds, 1),
                        "_data": data, "_classes": classes}
        log(f"{fold}: {json.dumps(result[fold]['spec'])}\n  selection {trace}\n  test "
            f"{json.dumps(result[fold]['test']['clips'])}")
    data = model_data(shipped, cache_dir, extra_dir, posture_s)
    classes = _fall_classes(shipped)
    all_clips = [r for rs in data.clips.values() for r in rs]
    all_streams = [s for v in data.streams.values() for ss in v.values() for s in ss]
    spec, trace = choose_spec(classes, all_clips, all_streams)
    rule = FallRule(classes, spec)
    result["shipped"] = {"spec": spec.model_dump(), "selection": trace,
                         "all_trials": _fold_report(rule, data, sorted(data.clips)),
                         "seconds": round(data.seconds, 1)}
    log(f"shipped: {json.dumps(result['shipped']['spec'])}\n  selection {trace}")
    # the defaults on the folds' held-out trials
    for fold, (_, _, test) in folds.items():
        r = result[fold]
        r["test_with_defaults"] = _fold_report(FallRule(r["_classes"], spec), r.pop("_data"), test)
        r.pop("_classes")
    return result


def _fall_classes(checkpoint: Path) -> tuple[int, ...]:
    import torch

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    labels = list(ck["labels"])
    return tuple(labels.index(f) for f in ck["label_groups"].get("fall", []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.falls", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cv = sub.add_parser("cv", help="choose the rule's defaults by cross-validation and report both folds")
    cv.add_argument("--runs", type=Path, nargs=2, default=[REPO_ROOT / "runs/upfall-stgcnpp-lite-t1",
                                                           REPO_ROOT / "runs/upfall-stgcnpp-lite-t2"])
    cv.add_argument("--shipped", type=Path, default=REPO_ROOT / "model_zoo/upfall-stgcnpp-lite/checkpoint.pt")
    cv.add_argument("--cache", type=Path, default=REPO_ROOT / "cache/skeletons/upfall")
    cv.add_argument("--extra-cache", type=Path, default=None,
                    help="skeleton cache of other non-fall clips (training.extract --videos <data>/clips)")
    cv.add_argument("--json", type=Path, default=None)
    cv.add_argument("--write", action="store_true",
                    help="store the shipped model's rule in its checkpoint's config (export copies it)")
    args = ap.parse_args(argv)
    runs = {"t1": args.runs[0], "t2": args.runs[1]}
    result = cross_validate(runs, args.shipped, args.cache, args.extra_cache)
    text = json.dumps(result, indent=1, default=_json_default)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    if args.write:
        store_rule(args.shipped, FallRuleSpec.model_validate(result["shipped"]["spec"]))
    return 0


def store_rule(checkpoint: Path, spec: FallRuleSpec) -> None:
    """Put ``spec`` in the checkpoint's config, as ``training.evaluate`` does for the clip rule."""
    import torch

    raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
    raw["config"]["fall_rule"] = spec.model_dump()
    torch.save(raw, checkpoint)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


if __name__ == "__main__":
    sys.exit(main())
