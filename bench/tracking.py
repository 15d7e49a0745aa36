"""Tracking benchmark: the service's people against the hand-checked ground truth (``groundtruth/``).

Two views of every labelled clip:

* ``clip`` -- what ``POST /recognize`` returns on a real server (``python -m service serve``) with
  ``frames=boxes``: the final people of the clip (tracks seen in fewer than 3 frames dropped,
  fragments stitched, people whose tracks never passed probation dropped) and each one's box in
  every frame, from its landmarks.
* ``stream@R`` -- the same server fed over ``WS /stream`` at R frames/s
  in real time (frame k sent at k/R s shows the clip at that time: frames are skipped, or repeated
  when R exceeds the clip's rate); the reply boxes per frame. Frames the server dropped (latest
  frame wins) have no reply and are not scored: ``replies`` / ``sent`` says how many were.

Scores (py-motmetrics, CLEAR MOT and identity metrics as in the MOTChallenge benchmarks): MOTA,
IDF1, identity switches, misses (FN), false positives, recall per ground-truth person (the fraction
of their labelled frames in which a track covers them) and phantom tracks. A prediction matches a
ground-truth box at IoU >= 0.5 (`IOU_THRESHOLD`, MOTChallenge's). The service's boxes are its
landmarks' extent, a little smaller than the head-to-feet truth (groundtruth/README.md); on the
19 labelled clips (2026-12-03, clip view) a ground-truth box's best-overlapping prediction had a
median IoU of 0.88 (10th percentile 0.73) and 98.4 % of them reached 0.5; 0.4 instead of 0.5
would have matched 56 more of 12,175 boxes, nearly all partial skeletons of a person lying on
his side (half his body), which a threshold should not call tracked. Predictions on people
labelled *ignore* (MOT ``conf`` 0: seen through the glass wall, mostly out of view) are removed
before scoring, as the MOTChallenge devkit does with distractors.

A phantom is a track on no one: unmatched in >= `PHANTOM_FRAMES` frames (and in more than it is
matched), not counting its *partial* frames: frames where its box lies >= `PARTIAL_INSIDE` inside
the box of a labelled person whom no other prediction matches or already covers in that frame (a
lone skeleton of part of a real person: the actor lying head-to-camera whose landmarks span his
upper body, a passer-by behind the glass cut at the hips by a bench). Those frames still count as a
miss and a false positive in MOTA; a second skeleton on a person already tracked is no partial: it
stays a phantom (a body inside another body).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from bench.groundtruth import Box, ClipInfo, TruthBox, load_index, load_truth
from skeleton.types import BoundingBox

if TYPE_CHECKING:
    from bench.server import ServerHandle

log = logging.getLogger("bench.tracking")

IOU_THRESHOLD = 0.5
PHANTOM_FRAMES = 3  # a track unmatched in this many frames (and in more than it is matched) is a phantom
PARTIAL_INSIDE = 0.8  # an unmatched box this much inside a labelled person no one covers: partial
RATES = (10.0, 15.0)
VIEWS = ("clip", "stream")

FrameTracks = list[tuple[int, Box]]  # (track id, box x0 y0 x1 y1) of one frame


@dataclass
class ViewRun:
    """What one view produced on one clip: per evaluated frame, its 1-based clip frame and tracks."""

    clip: str
    view: str
    frames: list[int] = field(default_factory=list)
    tracks: list[FrameTracks] = field(default_factory=list)
    pose_ms: list[float] = field(default_factory=list)
    people: list[int] = field(default_factory=list)  # people the pose stage found in the frame
    sent: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, frame: int, tracks: FrameTracks, pose_ms: float, people: int | None = None) -> None:
        self.frames.append(frame)
        self.tracks.append(tracks)
        self.pose_ms.append(pose_ms)
        self.people.append(len(tracks) if people is None else people)


@dataclass
class TrackingScore:
    clip: str
    view: str
    frames: int  # evaluated frames
    mota: float
    idf1: float
    id_switches: int
    misses: int
    false_positives: int
    gt_boxes: int  # counted ground-truth boxes over the evaluated frames
    recall: float
    precision: float
    recall_per_person: dict[int, float]
    phantoms: list[dict[str, int]]  # {"track", "unmatched", "matched"}: unmatched not counting partial frames
    tracks: int  # distinct predicted track ids (after removing those on ignored people)
    match_iou_median: float | None
    sent: int = 0
    dropped: int = 0
    partial: dict[int, int] = field(default_factory=dict)  # track -> frames a lone partial skeleton

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    A, B = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    iw = np.clip(np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    area = lambda X: (X[..., 2] - X[..., 0]) * (X[..., 3] - X[..., 1])  # noqa: E731
    union = area(A) + area(B) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def drop_ignored(truth: Sequence[TruthBox], predicted: FrameTracks, iou_threshold: float) -> FrameTracks:
    """Predictions that the one-to-one matching with *all* ground truth of the frame gives to an
    ignored person are removed (MOTChallenge devkit's preprocessing of distractors)."""
    if not predicted or all(r.counted for r in truth):
        return list(predicted)
    iou = _iou_matrix([r.box for r in truth], [b for _, b in predicted])
    rows, cols = linear_sum_assignment(-iou)
    drop = {c for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_threshold and not truth[r].counted}
    return [p for i, p in enumerate(predicted) if i not in drop]


def score(
    run: ViewRun,
    truth: Mapping[int, Sequence[TruthBox]],
    iou_threshold: float = IOU_THRESHOLD,
    phantom_frames: int = PHANTOM_FRAMES,
) -> TrackingScore:
    """MOT metrics of ``run`` against ``truth`` ({1-based frame: rows}), frame by evaluated frame."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    track_ids: set[int] = set()
    shown: list[tuple[Sequence[TruthBox], FrameTracks, FrameTracks]] = []  # rows, predicted, kept
    for i, (frame, predicted) in enumerate(zip(run.frames, run.tracks, strict=True)):
        rows = truth.get(frame, [])
        kept = drop_ignored(rows, predicted, iou_threshold)
        gt = [r for r in rows if r.counted]
        track_ids |= {t for t, _ in kept}
        dist = 1.0 - _iou_matrix([r.box for r in gt], [b for _, b in kept])
        dist[dist > 1.0 - iou_threshold] = np.nan
        acc.update([r.person for r in gt], [t for t, _ in kept], dist, frameid=i)
        shown.append((rows, predicted, kept))
    mh = mm.metrics.create()
    names = ["mota", "idf1", "num_switches", "num_misses", "num_false_positives", "num_objects",
             "recall", "precision"]  # fmt: skip
    summary = mh.compute(acc, metrics=names, name=run.view).iloc[0]
    ev = acc.mot_events
    matched = ev[ev.Type.isin(["MATCH", "SWITCH"])]
    per_person_seen = Counter(int(o) for o in ev[ev.Type.isin(["MATCH", "SWITCH", "MISS"])].OId)
    per_person_hit = Counter(int(o) for o in matched.OId)
    hyp_matched = Counter(int(h) for h in matched.HId)
    partial = _partial_frames(ev, shown, iou_threshold)
    hyp_fp = Counter(int(h) for h in ev[ev.Type == "FP"].HId) - partial
    phantoms = [
        {"track": h, "unmatched": n, "matched": hyp_matched.get(h, 0)}
        for h, n in sorted(hyp_fp.items())
        if n >= phantom_frames and n > hyp_matched.get(h, 0)
    ]
    ious = 1.0 - matched.D.to_numpy(dtype=float)
    return TrackingScore(
        clip=run.clip,
        view=run.view,
        frames=len(run.frames),
        mota=_num(summary["mota"]),
        idf1=_num(summary["idf1"]),
        id_switches=int(summary["num_switches"]),
        misses=int(summary["num_misses"]),
        false_positives=int(summary["num_false_positives"]),
        gt_boxes=int(summary["num_objects"]),
        recall=_num(summary["recall"]),
        precision=_num(summary["precision"]),
        recall_per_person={
            p: round(per_person_hit.get(p, 0) / n, 4) for p, n in sorted(per_person_seen.items())
        },
        phantoms=phantoms,
        tracks=len(track_ids),
        match_iou_median=round(float(np.median(ious)), 3) if ious.size else None,
        sent=run.sent,
        dropped=run.dropped,
        partial=dict(sorted(partial.items())),
    )


def _partial_frames(
    events: Any, shown: Sequence[tuple[Sequence[TruthBox], FrameTracks, FrameTracks]], iou_threshold: float
) -> Counter[int]:
    """Per track, its unmatched frames that are a lone partial skeleton of a labelled person: its
    box >= `PARTIAL_INSIDE` inside a person (counted and missed, or ignored and claimed by no
    prediction) and on whom no longer track is also unmatched (one partial per person and frame:
    the person's established track; a second skeleton on them stays unmatched)."""
    out: Counter[int] = Counter()
    length = Counter(int(h) for h in events.HId.dropna())
    fps = events[events.Type == "FP"]
    misses = events[events.Type == "MISS"]
    for i, frame_fp in fps.groupby(level=0):
        rows, predicted, kept = shown[int(i)]
        missed = {int(o) for o in misses.loc[[i]].OId} if i in misses.index.get_level_values(0) else set()
        claimed = _iou_matrix([r.box for r in rows], [b for _, b in predicted]) >= iou_threshold
        open_rows = [
            k for k, r in enumerate(rows)
            if (r.counted and r.person in missed) or (not r.counted and not claimed[k].any())
        ]  # fmt: skip
        boxes = dict(kept)
        rows_box = [BoundingBox(*r.box) for r in rows]
        cand = sorted(
            (
                (length[int(h)], BoundingBox(*boxes[int(h)]).intersection(rows_box[k]) / area, int(h), k)
                for h in frame_fp.HId
                if (area := BoundingBox(*boxes[int(h)]).area) > 0
                for k in open_rows
            ),
            reverse=True,
        )
        used_h: set[int] = set()
        used_k: set[int] = set()
        for _, inside, h, k in cand:
            if inside >= PARTIAL_INSIDE and h not in used_h and k not in used_k:
                used_h.add(h)
                used_k.add(k)
                out[h] += 1
    return out


def _num(x: Any) -> float:
    v = float(x)
    return round(v, 4) if math.isfinite(v) else float("nan")


# ----------------------------------------------------------------------------- the clip view


def clip_view(server: ServerHandle, info: ClipInfo, model: str | None = None) -> ViewRun:
    """The people ``POST /recognize`` returns for ``info``'s video, frame by frame (``frames=boxes``:
    the final people, blips dropped and fragments stitched, each box in the video's pixels).
    ``pose_ms``: the clip's pose time per frame (the response has no per-frame figure)."""
    import httpx

    params = {"frames": "boxes", **({"model": model} if model else {})}
    with info.video_path.open("rb") as f:
        r = httpx.post(
            server.url + "/recognize",
            params=params,
            files={"file": (info.video_path.name, f, "application/octet-stream")},
            timeout=3600,
        )
    r.raise_for_status()
    body = r.json()
    stats = body["stats"]
    per_frame = float(stats["stage_ms"]["pose"]) / max(int(stats["frames_processed"]), 1)
    run = ViewRun(info.video, "clip", sent=len(body["frames"]))
    for frame in body["frames"]:
        tracks: FrameTracks = [(int(p["track_id"]), _corners(p["box"])) for p in frame["people"]]
        run.add(int(frame["frame"]) + 1, tracks, per_frame)
    return run


def _corners(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1


# ----------------------------------------------------------------------------- the stream view


def stream_schedule(frames: int, fps: float, rate: float) -> list[int]:
    """0-based clip frames a camera at ``rate`` frames/s sees while the clip plays in real time."""
    count = math.ceil(frames * rate / fps)
    return [min(frames - 1, round(k * fps / rate)) for k in range(count)]


def stream_view(
    server: ServerHandle,
    info: ClipInfo,
    rate: float,
    jpegs: Sequence[bytes],
    model: str | None = None,
    drain_s: float = 5.0,
    open_timeout_s: float = 120.0,
    wait_replies: bool = False,
) -> ViewRun:
    """Send the clip over ``WS /stream`` at ``rate`` in real time; the reply boxes per frame.

    ``wait_replies``: send a frame only once the previous one is answered (and not before its time
    at ``rate``), each with its capture time k / ``rate`` (docs/api.md, the ``SKTS`` prefix), so no
    frame is dropped and the server's clock is the clip's whatever the machine's load (tests)."""
    from bench.streaming import ClientRun, _drive, _open

    schedule = stream_schedule(len(jpegs), info.fps, rate)

    async def go() -> ClientRun:
        ws, hello, _ = await _open(server.url, model, open_timeout_s)
        run = ClientRun(0, [jpegs[i] for i in schedule], rate, 0.0, hello=hello, keep_messages=True)
        try:
            if wait_replies:
                await _lockstep(ws, run, rate, open_timeout_s)
            else:
                await _drive(ws, run, asyncio.get_running_loop().time() + 0.3, drain_s)
        finally:
            await ws.close()
        return run

    client = asyncio.run(go())
    out = ViewRun(info.video, f"stream@{rate:g}", sent=client.sent, errors=client.errors)
    for msg in client.messages:
        tracks: FrameTracks = [(int(t["track_id"]), _corners(t["box"])) for t in msg["tracks"]]
        out.add(schedule[int(msg["frame_id"])] + 1, tracks, float(msg["timings_ms"].get("pose") or 0.0))
    if client.messages:
        out.dropped = int(client.messages[-1]["dropped"])
    return out


async def _lockstep(ws: Any, run: Any, rate: float, reply_timeout_s: float) -> None:
    """Each frame of ``run`` after the previous one's reply, at most ``rate`` frames a second, frame
    k stamped with capture time k / ``rate``."""
    import json
    import struct

    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for k, frame in enumerate(run.frames):
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at = loop.time() + 1.0 / rate
        await ws.send(struct.pack("<4sd", b"SKTS", k / rate) + frame)
        run.sent += 1
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), reply_timeout_s))
            if msg.get("type") == "frame":
                run.messages.append(msg)
                break
            if msg.get("type") == "error":
                run.errors.append(str(msg))
                break


# ----------------------------------------------------------------------------- the section


def pose_by_people(runs: Iterable[ViewRun]) -> list[dict[str, Any]]:
    """Pose time per frame against the number of people tracked in it (a stream's reply has both;
    ``POST /recognize`` reports only its pose time per clip: see each clip row)."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run in runs:
        kind = run.view.split("@")[0]
        if kind == "clip":
            continue
        for people, ms in zip(run.people, run.pose_ms, strict=True):
            groups[(kind, min(people, 4))].append(ms)
    out = []
    for (kind, people), times in sorted(groups.items()):
        a = np.asarray(times)
        out.append({
            "view": kind,
            "people": people if people < 4 else "4+",
            "frames": int(a.size),
            "mean_ms": round(float(a.mean()), 1),
            "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1),
        })  # fmt: skip
    return out


def run_tracking_bench(
    server: ServerHandle | None,
    clips: Sequence[str] | None = None,
    rates: Sequence[float] = RATES,
    views: Sequence[str] = VIEWS,
    model: str | None = None,
    save_dir: Path | None = None,
) -> dict[str, Any]:
    """The ``tracking`` section: every labelled clip (or ``clips``) in every view, scored.

    ``save_dir``: each view's tracks are also written there (`save_run`), to score them again
    (another IoU threshold, a fixed ground truth) without running pose and streams again.
    """
    from bench.clips import jpeg_frames
    from bench.machine import machine_info

    index = load_index()
    chosen = [c for c in index.values() if not clips or c.video in clips or c.stem in clips]
    if clips and len(chosen) != len(set(clips)):
        raise SystemExit(f"unknown clip(s) in {list(clips)}; labelled: {sorted(index)}")
    rows: list[dict[str, Any]] = []
    runs: list[ViewRun] = []
    for info in chosen:
        _, truth = load_truth(info.video)
        if "clip" in views and server is not None:
            log.info("tracking: clip view of %s", info.video)
            runs.append(clip_view(server, info, model))
            rows.append(
                {**score(runs[-1], truth).as_dict(), "pose_ms_per_frame": round(runs[-1].pose_ms[0], 1)}
            )
            _save(runs[-1], save_dir)
        if "stream" in views and server is not None:
            jpegs = jpeg_frames(info.video_path, info.frames)
            for rate in rates:
                log.info("tracking: stream view of %s at %g fps", info.video, rate)
                time.sleep(1.0)  # the previous stream's session closes
                runs.append(stream_view(server, info, rate, jpegs, model))
                rows.append(score(runs[-1], truth).as_dict())
                _save(runs[-1], save_dir)
    return {
        "machine": machine_info(),
        "iou_threshold": IOU_THRESHOLD,
        "phantom_frames": PHANTOM_FRAMES,
        "server_pose": server.ready.get("pose", "") if server is not None else "",
        "rows": rows,
        "pose_by_people": pose_by_people(runs),
    }


def save_run(run: ViewRun, path: Path) -> Path:
    """One view's tracks on one clip as JSON (read back with `load_run`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(run)))
    return path


def load_run(path: Path) -> ViewRun:
    raw = json.loads(path.read_text())
    raw["tracks"] = [[(int(t), tuple(box)) for t, box in frame] for frame in raw["tracks"]]
    return ViewRun(**raw)


def _save(run: ViewRun, folder: Path | None) -> None:
    if folder is not None:
        stem = Path(run.clip).with_suffix("").as_posix().replace("/", "_")
        save_run(run, folder / f"{stem}.{run.view}.json")


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def tracking_md(sec: dict[str, Any]) -> list[str]:
    """The per-clip table and the pose-time table (bench/report.py renders them)."""
    out = ["### Tracking: people against the labelled clips (groundtruth/)", ""]
    out.append(
        f"IoU >= {sec['iou_threshold']} to match; MOTA, IDF1, recall in %; per-person recall in the order "
        f"of the ground truth's ids; phantoms: tracks unmatched in >= {sec['phantom_frames']} frames "
        "(and in more frames than it is matched), not counting *partial* frames (a lone skeleton of part "
        "of a labelled person, still a miss and a false positive); stream rows score the frames that got "
        "a reply."
    )
    head = (
        "| clip | view | frames (sent) | MOTA | IDF1 | IDsw | FN | FP | recall per person | phantoms "
        "| partial frames |"
    )
    out += ["", head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sec["rows"]:
        people = " / ".join(_pct(v) for v in r["recall_per_person"].values())
        ph = r["phantoms"]
        phantoms = f"{len(ph)} (longest {max(p['unmatched'] for p in ph)})" if ph else "0"
        frames = f"{r['frames']}" + (f" ({r['sent']})" if r["view"] != "clip" else "")
        out.append(
            f"| {r['clip']} | {r['view']} | {frames} | {_pct(r['mota'])} | {_pct(r['idf1'])} | "
            f"{r['id_switches']} | {r['misses']} | {r['false_positives']} | {people} | {phantoms} | "
            f"{sum(r.get('partial', {}).values())} |"
        )
    out += ["", "Pose time per frame against the people found in it:", ""]
    out += ["| view | people | frames | mean ms | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
    for p in sec["pose_by_people"]:
        cells = [p["view"], p["people"], p["frames"], p["mean_ms"], p["p50_ms"], p["p95_ms"]]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out
