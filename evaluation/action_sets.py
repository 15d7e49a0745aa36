"""Few-shot UP-Fall through the real HTTP API: a custom action set enrolled from one trial's clips
(one example per activity), tested on the other trial's clips, next to a supervised model.

Per fold (trial 1 -> 2, and 2 -> 1): ``POST /action-sets``, one ``POST
/action-sets/{set}/labels/{activity}/examples`` per activity (a whole clip of the enrolment
camera), then ``POST /recognize?model=set:{set}`` for every test clip; clip top-1 (``unknown``
counts as wrong) and fall recall (a fall clip labelled with any of the five falls). With
``--unknown-clips`` the clips in ``<data>/clips`` (exercise, tai chi, weightlifting, two people
embracing: none of them an UP-Fall activity) go through every fold's set as well: each clip, and
each person in it, should come out ``unknown``.

    python -m evaluation.action_sets --json runs/action-sets-upfall.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.upfall import ClipCase, activity_labels, local_server, upfall_cases
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
    people = [t["top"][0]["label"] for t in body.get("tracks", []) if t.get("top")]
    seconds = time.perf_counter() - t0
    return Row(
        case_path.name, truth, clip.get("label"), clip.get("confidence"), seconds, fall, known, model, people
    )


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
) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {"folds": [], "supervised": [], "unknown_clips": []}
    with httpx.Client(headers=_auth()) as client:
        for enrol_trial, test_trial in folds:
            name = f"upfall-trial{enrol_trial}"
            fold = Fold(enrol_trial, test_trial, f"set:{name}")
            base = Fold(enrol_trial, test_trial, supervised or "")
            examples = [c for c in cases if c.trial == enrol_trial and c.camera == enrol_camera]
            enrol(client, url, name, examples, fold, enrol_seconds)
            for case in (c for c in cases if c.trial == test_trial and c.camera in test_cameras):
                fall = case.activity in FALLS
                fold.rows.append(_recognize(client, url, case.path, fold.model, case.truth, fall))
                print(f"  {case.name}: {fold.rows[-1].label!r} (truth {case.truth!r})", file=sys.stderr)
                if supervised:
                    base.rows.append(_recognize(client, url, case.path, supervised, case.truth, fall))
            out["folds"].append({**fold.summary(), "rows": [asdict(r) for r in fold.rows]})
            if supervised:
                out["supervised"].append({**base.summary(), "rows": [asdict(r) for r in base.rows]})
            for path in unknown_clips:
                row = _recognize(client, url, path, fold.model, "unknown", False)
                out["unknown_clips"].append(asdict(row))
                print(f"  {path.name} through {fold.model}: {row.label!r} {row.people}", file=sys.stderr)
    return out


def _auth() -> dict[str, str]:
    keys = Settings().api_keys
    return {"X-API-Key": keys[0].get_secret_value()} if keys else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.action_sets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", default=None, help="a running service (default: start one on loopback)")
    parser.add_argument("--folds", default="1-2,2-1", help="enrol trial-test trial pairs (default 1-2,2-1)")
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
    parser.add_argument("--json", type=Path, default=None, help="write the rows and summaries here")
    args = parser.parse_args(argv)
    settings = Settings()
    manifest = load_manifest(settings.models_dir / "upfall-stgcnpp-lite", verify_sha=False)
    cases = upfall_cases(data_root(), activity_labels(manifest))
    if args.activities:
        keep = {int(a) for a in args.activities.split(",")}
        cases = [c for c in cases if c.activity in keep]
    folds = [(int(a), int(b)) for a, b in (f.split("-") for f in args.folds.split(","))]
    cams = {int(c) for c in args.test_cameras.split(",")}
    extra = sorted((data_root() / "clips").glob("*.*")) if args.unknown_clips else []
    enrol_s = args.enrol_seconds or None
    t0 = time.perf_counter()
    if args.url:
        result = run(args.url, cases, folds, args.enrol_camera, cams, args.supervised, extra, enrol_s)
    else:
        with local_server(settings) as url:
            result = run(url, cases, folds, args.enrol_camera, cams, args.supervised, extra, enrol_s)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    for f in result["folds"] + result["supervised"]:
        print(
            f"{f['model']:>24} {f['fold']}: clip top-1 {100 * f['top1']:.1f} % ({f['clips']} clips), "
            f"fall recall {100 * f['fall_recall']:.1f} %, unknown {f['unknown']}, "
            f"top-1 of the best known label {100 * f['top1_without_unknown']:.1f} %"
        )
    if extra:
        rows = result["unknown_clips"]
        clips = sum(r["label"] == "unknown" for r in rows)
        people = [p for r in rows for p in r["people"]]
        print(
            f"clips outside the sets' actions, through {len(folds)} set(s): {clips} of {len(rows)} clip "
            f"labels unknown, {people.count('unknown')} of {len(people)} people"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
