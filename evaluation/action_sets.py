"""Few-shot UP-Fall through the real HTTP API: a custom action set enrolled from one trial's clips
(one example per activity), tested on the other trial's clips, next to a supervised model.

Per fold (trial 1 -> 2, and 2 -> 1): ``POST /action-sets``, one ``POST
/action-sets/{set}/labels/{activity}/examples`` per activity (a whole clip of the enrolment
camera), ``GET /action-sets/{set}/check`` (each example judged by the others), then ``POST
/recognize?model=set:{set}`` for every test clip; clip top-1 (``unknown``
counts as wrong) and fall recall (a fall clip labelled with any of the five falls). With
``--unknown-clips`` the clips in ``<data>/clips`` (exercise, tai chi, weightlifting, two people
embracing: none of them an UP-Fall activity) go through every fold's set as well, as a clip
(``POST /recognize``: the clip label, each person's label and their segments) and as a stream
(``WS /stream`` replaying the clip on its own clock: the label each frame reply gives each person):
everything should come out ``unknown``. ``--outside-models`` sends them through loaded models too
(e.g. the shipped classifiers, whose actions they are not either).

A set next to a base model (``service.combined``): ``--enrol-activities 9,10`` enrols only those
activities and ``--base NAME`` tests ``set:{set},NAME``; ``{trial}`` in ``--base`` and
``--supervised`` is the fold's enrolment trial (a classifier trained on that trial without the
taught activities, e.g. ``upfall-unknown-t{trial}``).

    python -m evaluation.action_sets --json runs/action-sets-upfall.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.falls import replay_frames
from evaluation.upfall import ClipCase, activity_labels, local_server, upfall_cases
from service.action_sets import SET_PREFIX
from service.combined import SEPARATOR
from service.core.config import Settings
from skeleton.manifest import load_manifest
from skeleton.paths import data_root

FALLS = frozenset({1, 2, 3, 4, 5})  # UP-Fall activities 1-5 are falls


@dataclass
class Row:
    clip: str
    truth: str
    label: str | None
    confidence: float | None
    seconds: float
    fall: bool
    known_label: str | None = None  # the best label other than unknown (the clip's top list)
    model: str = ""
    people: list[str] = field(default_factory=list)  # each person's label (their track's top one)
    segments_s: float = 0.0  # every person's labelled segments, seconds
    known_segments_s: float = 0.0  # of which labelled other than unknown
    known_segments: list[str] = field(default_factory=list)  # "label start-end" of those


@dataclass
class StreamRow:
    """A clip replayed through ``WS /stream``: the labels the frame replies gave its people."""

    clip: str
    model: str
    frames: int = 0
    labelled: int = 0  # (frame, person) pairs with a label (the person's first window full)
    unknown: int = 0  # of which ``unknown``
    known: dict[str, int] = field(default_factory=dict)  # the other labels, pairs each


@dataclass
class Fold:
    enrol_trial: int
    test_trial: int
    model: str
    enrol_s: list[float] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = len(self.rows)
        falls = [r for r in self.rows if r.fall]
        fall_labels = {r.truth for r in falls}
        return {
            "fold": f"trial {self.enrol_trial} -> {self.test_trial}",
            "model": self.model,
            "clips": n,
            "top1": sum(r.label == r.truth for r in self.rows) / max(n, 1),
            "top1_without_unknown": sum(r.known_label == r.truth for r in self.rows) / max(n, 1),
            "fall_recall": sum(r.label in fall_labels for r in falls) / max(len(falls), 1),
            "unknown": sum(r.label == "unknown" for r in self.rows),
            "enrol_s_mean": sum(self.enrol_s) / max(len(self.enrol_s), 1),
        }


def _post_clip(client: Any, url: str, path: Path, params: dict[str, Any] | None = None) -> Any:
    with path.open("rb") as f:
        r = client.post(url, params=params or {}, files={"file": (path.name, f, "video/mp4")}, timeout=3600)
    if r.status_code >= 300:
        raise RuntimeError(f"{url} {path}: {r.status_code} {r.text[:300]}")
    return r.json()


def _recognize(client: Any, url: str, case_path: Path, model: str, truth: str, fall: bool) -> Row:
    t0 = time.perf_counter()
    body = _post_clip(client, f"{url}/recognize", case_path, {"model": model, "top_k": 100})
    clip = body.get("clip") or {}
    known = next((s["label"] for s in clip.get("top", []) if s["label"] != "unknown"), None)
    tracks = body.get("tracks", [])
    people = [t["top"][0]["label"] for t in tracks if t.get("top")]
    segments = [s for t in tracks for s in t.get("segments", [])]
    known_segments = [s for s in segments if s["label"] != "unknown"]
    seconds = time.perf_counter() - t0
    return Row(
        case_path.name,
        truth,
        clip.get("label"),
        clip.get("confidence"),
        seconds,
        fall,
        known,
        model,
        people,
        segments_s=round(sum(s["end"] - s["start"] for s in segments), 2),
        known_segments_s=round(sum(s["end"] - s["start"] for s in known_segments), 2),
        known_segments=[f"{s['label']} {s['start']:.1f}-{s['end']:.1f}" for s in known_segments],
    )


def stream_labels(url: str, path: Path, model: str, headers: dict[str, str] | None = None) -> StreamRow:
    """``path`` replayed through ``WS /stream`` with ``model``: each frame reply's labels."""
    row = StreamRow(path.name, model)
    for msg in replay_frames(url, path, model, headers=headers):
        row.frames += 1
        for track in msg.get("tracks", []):
            if track.get("label") is None:
                continue
            row.labelled += 1
            if track["label"] == "unknown":
                row.unknown += 1
            else:
                row.known[track["label"]] = row.known.get(track["label"], 0) + 1
    return row


def enrol(
    client: Any, url: str, name: str, examples: list[ClipCase], fold: Fold, seconds: float | None
) -> None:
    """A fresh set ``name`` with one example per clip (label = the clip's activity), each the
    clip's first ``seconds`` (None: all of it)."""
    client.delete(f"{url}/action-sets/{name}")
    r = client.post(f"{url}/action-sets", json={"name": name})
    r.raise_for_status()
    for case in examples:
        t0 = time.perf_counter()
        params = {} if seconds is None else {"end": seconds}
        _post_clip(client, f"{url}/action-sets/{name}/labels/{case.truth}/examples", case.path, params)
        fold.enrol_s.append(time.perf_counter() - t0)
        print(f"  enrolled {case.name} as {case.truth!r} ({fold.enrol_s[-1]:.1f} s)", file=sys.stderr)


def run(
    url: str,
    cases: list[ClipCase],
    folds: list[tuple[int, int]],
    enrol_camera: int,
    test_cameras: set[int],
    supervised: str | None,
    unknown_clips: list[Path],
    enrol_seconds: float | None = None,
    outside_models: Sequence[str] = (),
    enrol_activities: set[int] | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {"folds": [], "supervised": [], "unknown_clips": [], "unknown_streams": []}
    auth = _auth()
    with httpx.Client(headers=auth) as client:
        for enrol_trial, test_trial in folds:
            name = f"upfall-trial{enrol_trial}"
            if enrol_activities:
                name += "-" + "-".join(str(a) for a in sorted(enrol_activities))
            model = f"{SET_PREFIX}{name}"
            if base_model:
                model += f"{SEPARATOR}{base_model.format(trial=enrol_trial)}"
            fold = Fold(enrol_trial, test_trial, model)
            base = Fold(enrol_trial, test_trial, supervised.format(trial=enrol_trial) if supervised else "")
            examples = [
                c
                for c in cases
                if c.trial == enrol_trial
                and c.camera == enrol_camera
                and (not enrol_activities or c.activity in enrol_activities)
            ]
            enrol(client, url, name, examples, fold, enrol_seconds)
            check = client.get(f"{url}/action-sets/{name}/check").raise_for_status().json()
            for e in check["examples"]:
                print(f"  check: {e['label']!r} {e['outcome']} (nearest {e['nearest']!r})", file=sys.stderr)
            for case in (c for c in cases if c.trial == test_trial and c.camera in test_cameras):
                fall = case.activity in FALLS
                fold.rows.append(_recognize(client, url, case.path, fold.model, case.truth, fall))
                print(f"  {case.name}: {fold.rows[-1].label!r} (truth {case.truth!r})", file=sys.stderr)
                if supervised:
                    base.rows.append(_recognize(client, url, case.path, base.model, case.truth, fall))
            out["folds"].append({**fold.summary(), "check": check, "rows": [asdict(r) for r in fold.rows]})
            if supervised:
                out["supervised"].append({**base.summary(), "rows": [asdict(r) for r in base.rows]})
            _outside(client, url, auth, unknown_clips, fold.model, out)
        for model in outside_models:
            _outside(client, url, auth, unknown_clips, model, out)
    return out


def _outside(
    client: Any, url: str, auth: dict[str, str], clips: list[Path], model: str, out: dict[str, Any]
) -> None:
    """The clips outside ``model``'s actions as clips and as streams (rows into ``out``); ``auth``:
    the client's key header, for the streams."""
    for path in clips:
        row = _recognize(client, url, path, model, "unknown", False)
        out["unknown_clips"].append(asdict(row))
        print(f"  {path.name} through {model}: {row.label!r} {row.people}", file=sys.stderr)
        streamed = stream_labels(url, path, model, auth)
        out["unknown_streams"].append(asdict(streamed))
        print(
            f"  {path.name} streamed: {streamed.unknown}/{streamed.labelled} unknown, {streamed.known}",
            file=sys.stderr,
        )


def _group(model: str) -> str:
    """The sets are summarised together, every other model alone."""
    return "sets" if model.startswith(SET_PREFIX) else model


def summarize_outside(result: dict[str, Any]) -> list[str]:
    """One line per group of models (``_group``): clip labels, people, segment seconds and stream
    replies that came out ``unknown``."""
    lines = []
    for group in sorted({_group(r["model"]) for r in result["unknown_clips"]}):
        rows = [r for r in result["unknown_clips"] if _group(r["model"]) == group]
        streams = [r for r in result["unknown_streams"] if _group(r["model"]) == group]
        people = [p for r in rows for p in r["people"]]
        known: Counter[str] = Counter()
        for r in streams:
            known.update(r["known"])
        clips = sum(r["label"] == "unknown" for r in rows)
        segments = sum(r["segments_s"] for r in rows)
        known_s = sum(r["known_segments_s"] for r in rows)
        replies = sum(r["labelled"] for r in streams)
        lines.append(
            f"clips outside {group}' actions: {clips} of {len(rows)} clip labels unknown, "
            f"{people.count('unknown')} of {len(people)} people; segments: {known_s:.1f} of {segments:.1f} s "
            f"labelled other than unknown; streams: {sum(r['unknown'] for r in streams)} of {replies} "
            f"labelled (frame, person) replies unknown, the others {dict(known)}"
        )
    return lines


def _ints(text: str) -> set[int]:
    """``"9,10"`` -> {9, 10} (activities, cameras)."""
    return {int(x) for x in text.split(",")}


def _auth() -> dict[str, str]:
    keys = Settings().api_keys
    return {"X-API-Key": keys[0].get_secret_value()} if keys else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.action_sets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", default=None, help="a running service (default: start one on loopback)")
    parser.add_argument(
        "--folds", default="1-2,2-1", help="enrol trial-test trial pairs (default 1-2,2-1; '': none)"
    )
    parser.add_argument(
        "--enrol-camera", type=int, default=1, help="camera of the enrolment clips (default 1)"
    )
    parser.add_argument("--test-cameras", default="1,2", help="cameras of the test clips (default 1,2)")
    parser.add_argument(
        "--enrol-seconds", type=float, default=10.0, help="each example: the clip's first N s (0: all)"
    )
    parser.add_argument("--supervised", default=None, help="also run this model on the test clips")
    parser.add_argument("--activities", default=None, help="only these activities, e.g. 1,6,10")
    parser.add_argument("--unknown-clips", action="store_true", help="also the clips in <data>/clips")
    parser.add_argument(
        "--outside-models",
        default="",
        help="also send those clips through these models, e.g. upfall-stgcnpp-lite",
    )
    parser.add_argument(
        "--enrol-activities", default=None, help="enrol only these activities, e.g. 9,10 (default: all)"
    )
    parser.add_argument(
        "--base", default=None, help="test the set next to this model, e.g. upfall-unknown-t{trial}"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows and summaries here")
    args = parser.parse_args(argv)
    settings = Settings()
    manifest = load_manifest(settings.models_dir / "upfall-stgcnpp-lite", verify_sha=False)
    cases = upfall_cases(data_root(), activity_labels(manifest))
    if args.activities:
        keep = _ints(args.activities)
        cases = [c for c in cases if c.activity in keep]
    folds = [(int(a), int(b)) for a, b in (f.split("-") for f in args.folds.split(",") if f)]
    outside = [m for m in args.outside_models.split(",") if m]
    cams = _ints(args.test_cameras)
    extra = sorted((data_root() / "clips").glob("*.*")) if args.unknown_clips else []
    enrol_s = args.enrol_seconds or None
    taught = _ints(args.enrol_activities) if args.enrol_activities else None
    t0 = time.perf_counter()
    with contextlib.nullcontext(args.url) if args.url else local_server(settings) as url:
        result = run(
            url,
            cases,
            folds,
            args.enrol_camera,
            cams,
            args.supervised,
            extra,
            enrol_s,
            outside,
            enrol_activities=taught,
            base_model=args.base,
        )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    for f in result["folds"] + result["supervised"]:
        print(
            f"{f['model']:>24} {f['fold']}: clip top-1 {100 * f['top1']:.1f} % ({f['clips']} clips), "
            f"fall recall {100 * f['fall_recall']:.1f} %, unknown {f['unknown']}, "
            f"top-1 of the best known label {100 * f['top1_without_unknown']:.1f} %"
        )
    for line in summarize_outside(result):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
