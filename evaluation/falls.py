"""Missed falls and false alarms per hour through the real service, as a clip and as a stream.

    python -m evaluation.falls [--model NAME[:TRIALS] ...] [--views clip,replay,stream]
        [--sets falls,daily,clips] [--joined DIR] [--jobs N] [--json out.json] [--url URL] [--limit N]

Every recording goes through the real server (uvicorn on loopback, started here unless ``--url``
names a running one): ``POST /recognize`` (the clip view: the response's ``falls``) and
``WS /stream`` (the stream view: JPEG frames, each stamped with its capture time in the recording,
the ``SKTS`` prefix of docs/api.md, the replies' ``falls``) in two ways: ``replay`` sends the next
frame once the reply came, so every frame is posed on the recording's clock whatever the machine's
speed (what the rule does on the camera's frames); ``stream`` sends at the recording's frame rate in
real time, as a webcam page does, and the server keeps the newest frame when it falls behind (what
this machine does live: ``frames processed`` says how much it kept).
Recordings:

* ``falls``: the UP-Fall clips of the model's held-out trials (``NAME:2``, or ``test trials [..]`` in
  its manifest; all trials for a model trained on both, which is then in-sample): a fall clip must
  raise a fall, another clip none;
* ``daily``: those trials' daily activities (6-11) joined end to end per camera
  (``training.joined``, written to ``--joined``), hours of ordinary life;
* ``clips``: the other real clips in ``<data>/clips``.

False alarms per hour: fall events on ``daily`` and ``clips`` over their hours. ``--limit`` keeps the
first N recordings of each set (quick runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.upfall import local_server
from service.core.config import Settings
from service.streams.clock import capture_prefix
from skeleton.manifest import load_manifest
from skeleton.paths import REPO_ROOT, data_root

VIEWS = ("clip", "replay", "stream")
SETS = ("falls", "daily", "clips")
FALL_ACTIVITIES = range(1, 6)
_TEST_TRIALS = re.compile(r"test trials \[([\d, ]*)\]")
_UPFALL = re.compile(r"Activity(\d+)/Trial(\d+)Cam(\d+)")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv")


@dataclass(frozen=True)
class Recording:
    name: str
    path: Path
    kind: str  # falls | daily | clips
    fall: bool  # a fall happens in it
    duration_s: float


@dataclass
class ViewResult:
    """One recording through one view: its fall events (as the API sends them)."""

    recording: str
    view: str
    fall: bool
    duration_s: float
    kind: str
    events: list[dict[str, Any]] = field(default_factory=list)
    frames_sent: int = 0
    frames_processed: int = 0
    error: str | None = None
    # clip view of an UP-Fall clip: the clip's label as /recognize decides it, and the true activity
    label: str | None = None
    truth: str | None = None

    @property
    def falls(self) -> int:
        return sum(e["type"] == "fall" for e in self.events)


# ----------------------------------------------------------------------------- recordings


def held_out_trials(model_dir: Path) -> list[int] | None:
    """The trials a model was not trained on (its manifest's protocol), None when it saw them all."""
    protocol = str(load_manifest(model_dir, verify_sha=False).metrics.get("protocol", ""))
    m = _TEST_TRIALS.search(protocol)
    trials = [int(t) for t in m.group(1).replace(" ", "").split(",") if t] if m else []
    return trials or None


def video_seconds(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
    finally:
        cap.release()
    return frames / fps if fps else 0.0


def recordings(
    trials: Sequence[int], sets: Sequence[str], joined_dir: Path, limit: int | None = None
) -> list[Recording]:
    """The recordings of ``sets`` for the UP-Fall ``trials`` (joined videos written when missing)."""
    root = data_root()
    out: list[Recording] = []
    if "falls" in sets:
        clips = sorted((root / "upfall").glob("Activity*/Trial*Cam*.mp4"), key=_upfall_key)
        picked = [p for p in clips if _upfall_key(p)[1] in trials]
        out += [_recording(p, "falls", _upfall_key(p)[0] in FALL_ACTIVITIES) for p in picked[:limit]]
    if "daily" in sets:
        from training.joined import daily_names, join_videos

        paths = []
        for t in trials:
            for c in (1, 2):
                path = joined_dir / f"Trial{t}Cam{c}.mp4"
                if not path.is_file():
                    join_videos([root / "upfall" / f"{n}.mp4" for n in daily_names(t, c)], path)
                paths.append(path)
        out += [_recording(p, "daily", False, f"daily/{p.stem}") for p in paths[:limit]]
    if "clips" in sets:
        paths = sorted(p for p in (root / "clips").iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        out += [_recording(p, "clips", False, f"clips/{p.name}") for p in paths[:limit]]
    return out


def _upfall_key(path: Path) -> tuple[int, int, int]:
    m = _UPFALL.search(path.as_posix())
    assert m is not None, path
    a, t, c = (int(g) for g in m.groups())
    return a, t, c


def _recording(path: Path, kind: str, fall: bool, name: str | None = None) -> Recording:
    if name is None:
        a, t, c = _upfall_key(path)
        name = f"Activity{a}/Trial{t}Cam{c}"
    return Recording(name, path, kind, fall, round(video_seconds(path), 3))


# ----------------------------------------------------------------------------- the two views


def clip_view(url: str, rec: Recording, model: str, overrides: dict[str, float] | None = None) -> ViewResult:
    """``POST /recognize`` with the video; the response's fall events."""
    import httpx

    res = ViewResult(rec.name, "clip", rec.fall, rec.duration_s, rec.kind)
    with rec.path.open("rb") as f:
        r = httpx.post(
            f"{url}/recognize",
            params={"model": model, **(overrides or {})},
            files={"file": (rec.path.name, f, "application/octet-stream")},
            timeout=3600,
        )
    if r.status_code != 200:
        res.error = f"{r.status_code}: {r.text[:300]}"
        return res
    body = r.json()
    res.events = body["falls"]
    res.label = (body.get("clip") or {}).get("label")
    res.frames_sent = res.frames_processed = int(body["stats"]["frames_processed"])
    return res


class StreamError(RuntimeError):
    """The server answered a stream with an error (at connect or to a frame)."""


@contextlib.contextmanager
def _stream(
    url: str, model: str, overrides: dict[str, float] | None, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """An open ``WS /stream`` past its hello (``StreamError`` when something else came); ``headers``:
    e.g. the API key's."""
    from urllib.parse import urlencode

    from websockets.sync.client import connect

    query = urlencode({"model": model, **(overrides or {})})
    ws_url = url.replace("http://", "ws://") + f"/stream?{query}"
    with connect(ws_url, max_size=None, open_timeout=120, proxy=None, additional_headers=headers) as ws:
        hello = json.loads(ws.recv(timeout=120))
        if hello.get("type") != "hello":
            raise StreamError(str(hello))
        yield ws


def _error_text(msg: dict[str, Any]) -> str:
    return f"{msg.get('code')}: {msg.get('message')}"


def replay_frames(
    url: str,
    path: Path,
    model: str,
    overrides: dict[str, float] | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """``WS /stream`` replaying a recording: every frame stamped with its capture time in the
    recording and sent once the previous one was answered (no frame dropped, the windows and
    events on the recording's clock); yields each ``frame`` reply, ``StreamError`` on an error."""
    with _stream(url, model, overrides, headers) as ws:
        for i, (jpg, fps) in enumerate(_jpegs(path)):
            ws.send(capture_prefix(i / fps) + jpg)
            while (msg := json.loads(ws.recv(timeout=300))).get("type") != "frame":
                if msg.get("type") == "error":
                    raise StreamError(_error_text(msg))
            yield dict(msg)


def stream_view(
    url: str, rec: Recording, model: str, overrides: dict[str, float] | None = None, drain_s: float = 60.0
) -> ViewResult:
    """``WS /stream`` as a webcam client: every frame JPEG-encoded, stamped with its capture time
    (its time in the recording, as the browser page stamps its camera's frames) and sent at the
    recording's frame rate in real time from the first frame on; the server keeps the newest frame
    when it falls behind. The replies' fall events (on the recording's clock), until the reply to
    the last frame."""
    res = ViewResult(rec.name, "stream", rec.fall, rec.duration_s, rec.kind)
    try:
        with _stream(url, model, overrides) as ws:
            _send_live(ws, rec, res, drain_s)
    except StreamError as exc:
        res.error = str(exc)
    return res


def _send_live(ws: Any, rec: Recording, res: ViewResult, drain_s: float) -> None:
    """``stream_view``'s sender (real time, a thread) and reader (until the last frame's reply)."""
    sent = threading.Event()
    total: list[int] = []

    def sender() -> None:
        try:
            n = 0
            t0 = time.perf_counter()
            for i, (jpg, fps) in enumerate(_jpegs(rec.path)):
                delay = t0 + i / fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                ws.send(capture_prefix(i / fps) + jpg)
                n += 1
            total.append(n)
        finally:
            sent.set()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    last_id = -1
    deadline = None
    while True:
        if sent.is_set() and deadline is None:
            deadline = time.monotonic() + drain_s
        if deadline is not None and (time.monotonic() > deadline or (total and last_id >= total[0] - 1)):
            break
        try:
            msg = json.loads(ws.recv(timeout=0.5))
        except TimeoutError:
            continue
        if msg.get("type") == "frame":
            last_id = int(msg["frame_id"])
            res.frames_processed = int(msg["processed"])
            res.events += msg.get("falls", [])
        elif msg.get("type") == "error":
            res.error = _error_text(msg)
    thread.join(5)
    res.frames_sent = total[0] if total else 0
    if not total:
        res.error = res.error or f"no frame could be read from {rec.path}"


def replay_view(
    url: str, rec: Recording, model: str, overrides: dict[str, float] | None = None
) -> ViewResult:
    """``replay_frames`` of a recording: its fall events on the recording's clock."""
    res = ViewResult(rec.name, "replay", rec.fall, rec.duration_s, rec.kind)
    try:
        for msg in replay_frames(url, rec.path, model, overrides):
            res.frames_sent += 1
            res.frames_processed = int(msg["processed"])
            res.events += msg.get("falls", [])
    except StreamError as exc:
        res.error = str(exc)
    return res


def _jpegs(path: Path, quality: int = 85) -> Iterator[tuple[bytes, float]]:
    """The video's frames as JPEG, with its frame rate, decoded as they are sent."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                yield buf.tobytes(), fps
    finally:
        cap.release()


# ----------------------------------------------------------------------------- the summary


def summarize(results: Sequence[ViewResult]) -> dict[str, Any]:
    """Per view: falls found on fall recordings, false falls on the others, false alarms per hour on
    the long ordinary-life recordings (``daily`` + ``clips``), with the hours measured."""
    out: dict[str, Any] = {}
    for view in sorted({r.view for r in results}):
        rs = [r for r in results if r.view == view and r.error is None]
        falls = [r for r in rs if r.fall]
        others = [r for r in rs if not r.fall]
        ordinary = [r for r in others if r.kind in ("daily", "clips")]
        hours = sum(r.duration_s for r in ordinary) / 3600
        false = sum(r.falls for r in ordinary)
        judged = [r for r in rs if r.truth is not None and view == "clip"]
        out[view] = {
            # clip view: top-1 over the UP-Fall clips (the label /recognize gives the clip)
            "clip_top1": round(sum(r.label == r.truth for r in judged) / len(judged), 4) if judged else None,
            "wrong_clips": [f"{r.recording}->{r.label}" for r in judged if r.label != r.truth],
            "falls_found": f"{sum(r.falls > 0 for r in falls)}/{len(falls)}",
            "fall_recall": round(sum(r.falls > 0 for r in falls) / len(falls), 4) if falls else None,
            "missed": [r.recording for r in falls if not r.falls],
            "false_fall_recordings": f"{sum(r.falls > 0 for r in others)}/{len(others)}",
            "false_fall_names": [r.recording for r in others if r.falls],
            "recovered_events": sum(e["type"] == "recovered" for r in rs for e in r.events),
            "ordinary_hours": round(hours, 4),
            "false_alarms": false,
            "false_alarms_per_hour": round(false / hours, 3) if hours else None,
            "errors": [f"{r.recording}: {r.error}" for r in results if r.view == view and r.error],
            # stream view: the share of the frames sent that the server processed (a busy server
            # keeps the newest frame); below ~0.5 the result says more about the load than the rule
            "frames_processed_share": round(
                sum(r.frames_processed for r in rs) / max(1, sum(r.frames_sent for r in rs)), 3
            ),
        }
    return out


@dataclass
class ModelRun:
    model: str
    trials: list[int]
    in_sample: bool
    results: list[ViewResult]

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "trials": self.trials,
            "in_sample": self.in_sample,
            "views": summarize(self.results),
        }


def evaluate(
    url: str,
    models: Sequence[tuple[str, list[int] | None]],
    models_dir: Path,
    views: Sequence[str] = VIEWS,
    sets: Sequence[str] = SETS,
    joined_dir: Path = REPO_ROOT / "artifacts" / "joined",
    jobs: int = 1,
    limit: int | None = None,
    progress: Path | None = None,
) -> list[ModelRun]:
    """Every recording of every model through the chosen views (``jobs`` at a time)."""
    runs: list[ModelRun] = []
    for name, trials in models:
        held_out = trials or held_out_trials(models_dir / name)
        chosen = held_out or [1, 2]
        run = ModelRun(name, chosen, held_out is None, [])
        runs.append(run)
        recs = recordings(chosen, sets, joined_dir, limit)
        tasks = [(view, rec) for rec in recs for view in views]
        labels = load_manifest(models_dir / name, verify_sha=False).labels

        def one(task: tuple[str, Recording], model: str = name, labels: list[str] = labels) -> ViewResult:
            view, rec = task
            fn = {"clip": clip_view, "replay": replay_view, "stream": stream_view}[view]
            try:
                res = fn(url, rec, model)
            except Exception as exc:  # one failed recording is reported, the run goes on
                res = ViewResult(rec.name, view, rec.fall, rec.duration_s, rec.kind, error=repr(exc))
            if rec.kind == "falls" and len(labels) >= _upfall_key(rec.path)[0]:
                res.truth = labels[_upfall_key(rec.path)[0] - 1]
            print(
                f"{model} {view:6s} {rec.name}: {[e['type'] for e in res.events]}"
                + (f" ERROR {res.error}" if res.error else ""),
                file=sys.stderr,
                flush=True,
            )
            return res

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for res in pool.map(one, tasks):
                run.results.append(res)
                if progress is not None:
                    progress.write_text(_to_json(runs))
    return runs


def _to_json(runs: Sequence[ModelRun]) -> str:
    return json.dumps(
        {
            "summary": [r.summary() for r in runs],
            "results": {r.model: [asdict(x) for x in r.results] for r in runs},
        },
        indent=1,
    )


def print_table(runs: Sequence[ModelRun]) -> None:
    print(
        f"\n{'model':32s} {'view':7s} {'falls found':12s} {'false falls':12s} "
        f"{'false alarms / hour (hours)':28s} {'recovered':10s} {'frames processed':17s} clip top-1"
    )
    for run in runs:
        for view, s in run.summary()["views"].items():
            per_hour = f"{s['false_alarms_per_hour']} ({s['ordinary_hours']} h)"
            tag = " (in-sample)" if run.in_sample else f" (trials {run.trials})"
            print(
                f"{run.model + tag:32s} {view:7s} {s['falls_found']:12s} {s['false_fall_recordings']:12s} "
                f"{per_hour:28s} {s['recovered_events']:<10d} {s['frames_processed_share']:<17} "
                f"{'-' if s['clip_top1'] is None else s['clip_top1']}"
            )


def _model_arg(text: str) -> tuple[str, list[int] | None]:
    name, _, trials = text.partition(":")
    return name, [int(t) for t in trials.split(",") if t] or None


@contextlib.contextmanager
def _server(url: str | None, settings: Settings) -> Iterator[str]:
    if url:
        yield url
    else:
        with local_server(settings) as base:
            yield base


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.falls", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        type=_model_arg,
        default=[],
        help="NAME or NAME:TRIALS (repeatable; default: every UP-Fall model in the models dir)",
    )
    ap.add_argument("--views", default=",".join(VIEWS), help="clip,replay,stream")
    ap.add_argument("--sets", default=",".join(SETS), help="falls,daily,clips")
    ap.add_argument(
        "--joined",
        type=Path,
        default=REPO_ROOT / "artifacts" / "joined",
        help="folder of the joined daily-activity videos (written when missing)",
    )
    ap.add_argument("--url", default=None, help="a running service (default: start one on loopback)")
    ap.add_argument("--jobs", type=int, default=1, help="recordings in flight at once")
    ap.add_argument("--limit", type=int, default=None, help="first N recordings of each set")
    ap.add_argument("--json", type=Path, default=None, help="results, rewritten after every recording")
    args = ap.parse_args(argv)
    settings = Settings()
    models = args.model or [
        (p.name, None)
        for p in sorted(settings.models_dir.iterdir())
        if (p / "manifest.json").is_file() and "upfall" in p.name.lower()
    ]
    if not models:
        ap.error(f"no UP-Fall model under {settings.models_dir}; pass --model")
    with _server(args.url, settings) as url:
        runs = evaluate(
            url,
            models,
            settings.models_dir,
            args.views.split(","),
            args.sets.split(","),
            args.joined,
            args.jobs,
            args.limit,
            args.json,
        )
    print_table(runs)
    if args.json:
        args.json.write_text(_to_json(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
