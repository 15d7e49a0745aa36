"""Saved poses, to iterate on the people rules without running pose again.

    python -m bench.poses dump --out DIR [--clips A,B] [--rate R] [--lanes N]
    python -m bench.poses score DIR [--clips A,B] [--confirm-s S]
    python -m bench.poses searchcost CLIP [CLIP ...]
    python -m bench.poses changes VIDEO [VIDEO ...] --tracker FIELD=VALUE [--stream QUALITY]

``dump`` runs the service's default estimator (``Settings().pose_spec()``) on labelled clips
(groundtruth/) in the service's lane order (`perception.pose.lanes.run_lanes`) and keeps every
frame's *raw* poses (before duplicate removal and the plausibility rules,
`perception.pose.person.select_people`) and its pose time: with
``--rate R`` only the frames a camera at R frames/s sees while the clip plays (a stream's view
without its drops), else every frame (the clip view). ``score`` re-runs the people selection,
tracking and, for the clip view, blips and stitching (`perception.tracking.clip_tracks`) on the
saved poses and scores them as ``python -m bench tracking`` does, in seconds instead of minutes.

``changes`` poses any videos (labelled or not: the fall checks' recordings) once and lists the frames
whose tracks or confirmations a tracker change alters, so a new rule can be shown to leave every
other recording as it was.

What ``score`` cannot change: which people the estimator found (its ROIs do not depend on the
rules after it).
The figures that count are ``python -m bench tracking``'s (the real service); this is the loop
to try rules in between.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.groundtruth import ClipInfo, load_index, load_truth
from bench.tracking import FrameTracks, TrackingScore, ViewRun, score, stream_schedule
from skeleton.types import PersonPose

if TYPE_CHECKING:
    from service.frames import TrackedFrame

log = logging.getLogger("bench.poses")


@dataclass
class PoseDump:
    """One clip's raw poses per posed frame, and how they were made."""

    clip: str
    view: str  # "clip" or "stream@R"
    lanes: int
    width: int  # analysed frame size
    height: int
    scale: float  # analysed / source pixels
    frames: list[int] = field(default_factory=list)  # 1-based clip frames posed
    timestamps: list[float] = field(default_factory=list)
    pose_ms: list[float] = field(default_factory=list)
    raw: list[tuple[PersonPose, ...]] = field(default_factory=list)
    estimator: dict[str, Any] = field(default_factory=dict)
    jpeg: int | None = None  # frames JPEG-encoded at this quality first (None: the video's own)

    def save(self, path: Path) -> Path:
        poses = [p for frame in self.raw for p in frame]

        def stack(name: str, shape: tuple[int, ...]) -> np.ndarray:
            if not poses:
                return np.zeros((0, *shape), np.float32)
            return np.stack([getattr(p, name) for p in poses]).astype(np.float32)

        meta = {
            k: getattr(self, k)
            for k in ("clip", "view", "lanes", "width", "height", "scale", "estimator", "jpeg")
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            meta=json.dumps(meta),
            frames=np.asarray(self.frames, np.int64),
            timestamps=np.asarray(self.timestamps, np.float64),
            pose_ms=np.asarray(self.pose_ms, np.float64),
            counts=np.asarray([len(f) for f in self.raw], np.int64),
            image=stack("image", (33, 3)),
            world=stack("world", (33, 3)),
            visibility=stack("visibility", (33,)),
            score=np.asarray([p.score for p in poses], np.float32),
        )
        return path

    @classmethod
    def load(cls, path: Path) -> PoseDump:
        from perception.pose.person import pose_from_pixels

        z = np.load(path)
        meta = json.loads(str(z["meta"]))
        dump = cls(**meta)
        dump.frames = [int(f) for f in z["frames"]]
        dump.timestamps = [float(t) for t in z["timestamps"]]
        dump.pose_ms = [float(t) for t in z["pose_ms"]]
        k = 0
        for n in z["counts"]:
            frame = []
            for i in range(k, k + int(n)):
                p = pose_from_pixels(
                    z["image"][i], z["world"][i], z["visibility"][i], dump.width, dump.height
                )
                frame.append(p.__class__(p.image, p.world, p.visibility, p.box, float(z["score"][i])))
            dump.raw.append(tuple(frame))
            k += int(n)
        return dump


def dump_clip(
    info: ClipInfo, rate: float | None = None, lanes: int | None = None, jpeg: int | None = None
) -> PoseDump:
    """Raw poses of ``info``'s video with the service's default estimator on ``lanes`` lanes
    (None: a clip's default, `perception.pose.lanes.default_lanes`); with ``jpeg`` each frame is
    first JPEG-encoded at that quality and decoded, as a stream's client sends it."""
    from perception.pose.lanes import run_lanes
    from perception.pose.person import select_people
    from perception.video import Frame, VideoReader
    from service.core.config import Settings
    from service.frames import FrameTracking, PosedFrame

    s = Settings()
    spec = s.pose_spec()
    if lanes is None:
        lanes = 1 if rate else s.clip_lanes(info.fps)
    estimators = [spec.create() for _ in range(lanes)]
    tracking = FrameTracking(s.min_pose_visibility)
    with VideoReader(info.video_path, max_side=s.pose_max_side) as reader:
        frames = list(reader)
    clip_frames = stream_schedule(len(frames), info.fps, rate) if rate else list(range(len(frames)))
    if rate:  # a camera at `rate`: frame k at k / rate shows the clip at that time
        frames = [Frame(k, k / rate, frames[i].rgb, frames[i].scale) for k, i in enumerate(clip_frames)]
    if jpeg:
        frames = [replace(f, rgb=_jpeg_round_trip(f.rgb, jpeg)) for f in frames]
    dump = PoseDump(info.video, f"stream@{rate:g}" if rate else "clip", lanes, 0, 0, 1.0, jpeg=jpeg or None)
    raw: dict[int, tuple[PersonPose, ...]] = {}
    estimate = [e.estimate for e in estimators]

    def keep_raw(lane: int) -> Any:
        def call(rgb: np.ndarray, ts: float, expected: Any = ()) -> tuple[PersonPose, ...]:
            out = estimate[lane](rgb, ts, expected)
            raw[round(ts * 1e6)] = estimators[lane].last_raw  # type: ignore[attr-defined]
            return out

        return call

    for lane, est in enumerate(estimators):
        est.estimate = keep_raw(lane)  # type: ignore[method-assign]

    def consume(frame: Frame, poses: tuple[PersonPose, ...], pose_s: float) -> None:
        people = select_people(raw[round(frame.timestamp_s * 1e6)], s.max_people)
        tracking.track(PosedFrame(frame.index, frame.timestamp_s, frame.width, frame.height, people))
        dump.frames.append(clip_frames[frame.index] + 1)
        dump.timestamps.append(frame.timestamp_s)
        dump.pose_ms.append(pose_s * 1e3)
        dump.raw.append(raw.pop(round(frame.timestamp_s * 1e6)))
        dump.width, dump.height, dump.scale = frame.width, frame.height, frame.scale

    try:
        run_lanes(frames, estimators, consume)
        dump.estimator = estimators[0].config()  # type: ignore[attr-defined]
    finally:
        for est in estimators:
            est.close()
    return dump


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    from perception.video import decode_image

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return decode_image(buf.tobytes())


def score_dump(
    dump: PoseDump,
    min_track_frames: int | None = None,
    confirm_s: float | None = None,
    tracker: dict[str, Any] | None = None,
) -> tuple[ViewRun, TrackingScore]:
    """The people rules, tracking and (clip view) stitching re-run on ``dump``, scored; a stream
    view reports confirmed tracks only, as a stream does. ``confirm_s``: the tracker's probation
    (None: ``Settings().track_confirm_s``); ``tracker``: other `TrackerConfig` fields to set (the
    cross-validation of a tracker rule)."""
    from perception.tracking.clip_tracks import MIN_TRACK_FRAMES, TrackHistory, clip_tracks
    from service.core.config import Settings

    s = Settings()
    history = TrackHistory()
    run = ViewRun(dump.clip, dump.view, sent=len(dump.frames))
    for k, tracked in enumerate(tracked_frames(dump, confirm_s, tracker)):
        history.add(tracked.update)
        run.add(dump.frames[k], [(p.track_id, _box(p.pose, dump.scale)) for p in tracked.people],
                dump.pose_ms[k])
    if dump.view == "clip":
        joined, _ = clip_tracks(
            history, (dump.width, dump.height), s.stitch_tracks, min_track_frames or MIN_TRACK_FRAMES
        )
        run.tracks = _per_frame(joined, len(run.frames), dump.width, dump.height, dump.scale)
    _, truth = load_truth(dump.clip)
    return run, score(run, truth)


def tracked_frames(
    dump: PoseDump, confirm_s: float | None = None, tracker: dict[str, Any] | None = None
) -> Iterator[TrackedFrame]:
    """The service's people selection and tracking over ``dump``'s raw poses, frame by frame (a
    clip view keeps tentative tracks for stitching). ``confirm_s``: the tracker's probation (None:
    ``Settings().track_confirm_s``); ``tracker``: other `TrackerConfig` fields to set."""
    from perception.pose.person import select_people
    from perception.tracking.tracker import Tracker
    from service.core.config import Settings
    from service.frames import FrameTracking, PosedFrame

    s = Settings()
    confirm = s.track_confirm_s if confirm_s is None else confirm_s
    tracking = FrameTracking(s.min_pose_visibility, confirm, tentative=dump.view == "clip")
    if tracker:
        tracking.tracker = Tracker(confirm_s=confirm, **tracker)
    for k, (ts, raw) in enumerate(zip(dump.timestamps, dump.raw, strict=True)):
        people = select_people(raw, s.max_people)
        yield tracking.track(PosedFrame(k, ts, dump.width, dump.height, people))


def _box(pose: PersonPose, scale: float) -> tuple[float, float, float, float]:
    b = pose.box
    return b.x0 / scale, b.y0 / scale, b.x1 / scale, b.y1 / scale


def _per_frame(
    joined: dict[int, Any], frames: int, width: int, height: int, scale: float
) -> list[FrameTracks]:
    from perception.pose.person import pose_from_pixels

    out: list[FrameTracks] = [[] for _ in range(frames)]
    for tid, seq in joined.items():
        seen = np.isfinite(seq.image[:, :, :2]).all(axis=(1, 2))
        for k in np.flatnonzero(seen):
            pose = pose_from_pixels(seq.image[k], seq.world[k], seq.visibility[k], width, height)
            out[k].append((tid, _box(pose, scale)))
    return out


def search_cost(video: Path) -> dict[str, float]:
    """Pose time per frame of the default estimator against the same without search windows, both
    on every frame of ``video``, interleaved frame by frame (the ratio holds under any load)."""
    import time

    from perception.pose.estimator import create_pose_estimator
    from perception.video import VideoReader
    from service.core.config import Settings

    s = Settings()
    spec = s.pose_spec()
    plain = create_pose_estimator(spec.kind, max_people=spec.max_people, **{**spec.options, "search": False})
    with_search = spec.create()
    times: dict[str, list[float]] = {"search": [], "none": []}
    try:
        with VideoReader(video, max_side=s.pose_max_side) as reader:
            for f in reader:
                pair = [("search", with_search), ("none", plain)]
                for name, est in pair if f.index % 2 == 0 else pair[::-1]:
                    t0 = time.perf_counter()
                    est.estimate(f.rgb, f.timestamp_s)
                    times[name].append(1e3 * (time.perf_counter() - t0))
    finally:
        plain.close()
        with_search.close()
    a, b = np.asarray(times["search"]), np.asarray(times["none"])
    return {
        "frames": float(len(a)),
        "mean_ms": float(a.mean()),
        "mean_ms_without": float(b.mean()),
        "mean_ratio": float(a.mean() / b.mean()),
        "median_ratio": float(np.median(a) / np.median(b)),
    }


def _line(s: TrackingScore) -> str:
    people = " / ".join(f"{100 * v:.1f}" for v in s.recall_per_person.values())
    ph = ", ".join(f"{p['track']}:{p['unmatched']}" for p in s.phantoms) or "0"
    part = ", ".join(f"{t}:{n}" for t, n in s.partial.items()) or "0"
    return (
        f"{s.clip:36s} {s.view:10s} MOTA {100 * s.mota:5.1f} IDF1 {100 * s.idf1:5.1f} "
        f"IDsw {s.id_switches:2d} FN {s.misses:4d} FP {s.false_positives:4d} recall {people} phantoms {ph} "
        f"partial {part}"
    )


def _chosen(arg: str | None) -> list[ClipInfo]:
    index = load_index()
    wanted = [c for c in (arg or "").split(",") if c]
    chosen = [c for c in index.values() if not wanted or c.video in wanted or c.stem in wanted]
    if wanted and not chosen:
        raise SystemExit(f"unknown clip(s) {wanted}; labelled: {sorted(index)}")
    return chosen


def _fields(pairs: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` arguments as TrackerConfig overrides (numbers; ``none``: None)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = None if value.lower() == "none" else (int(value) if value.isdigit() else float(value))
    return out


def video_info(path: Path) -> ClipInfo:
    """A ``ClipInfo`` for any video (labelled or not), from its container."""
    from perception.video import probe_video
    from skeleton.paths import data_root

    c = probe_video(path)
    root = data_root()
    video = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return ClipInfo(video, c.fps or 25.0, c.frame_count, c.width, c.height)


def track_changes(dump: PoseDump, tracker: dict[str, Any]) -> list[int]:
    """Frames (0-based, of the dump) whose tracks or confirmations differ between the default
    tracker and one with ``tracker``'s fields set: what a tracker rule changes on a recording
    nobody labelled (every frame a fall check or a user would see)."""
    default, changed = (
        [[(p.track_id, p.confirmed) for p in f.update.tracks] for f in tracked_frames(dump, tracker=fields)]
        for fields in ({}, tracker)
    )
    return [k for k, (a, b) in enumerate(zip(default, changed, strict=True)) if a != b]


def _name(dump: PoseDump) -> str:
    stem = Path(dump.clip).with_suffix("").as_posix().replace("/", "_")
    jpeg = f".jpeg{dump.jpeg}" if dump.jpeg else ""
    return f"{stem}.{dump.view}.L{dump.lanes}{jpeg}.npz"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.poses", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="pose the labelled clips, keep the raw poses")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--clips", help="comma-separated data paths or stems (default: all labelled)")
    d.add_argument(
        "--rate", type=float, default=None, help="a stream's frames at this rate (default: every frame)"
    )
    d.add_argument("--lanes", type=int, default=None, help="default: a clip's (POST /recognize's) lanes")
    d.add_argument("--jpeg", type=int, default=None, help="JPEG round trip at this quality (as streamed)")
    sc = sub.add_parser("score", help="re-run the people rules on saved poses and score them")
    cost = sub.add_parser("searchcost", help="pose time with search windows / without, interleaved")
    cost.add_argument("videos", nargs="+", help="data paths (e.g. clips/stgcn_ta_chi.mp4)")
    sc.add_argument("folder", type=Path)
    sc.add_argument("--clips")
    sc.add_argument(
        "--confirm-s", type=float, default=None, help="tracker probation, s (default: the setting's)"
    )
    sc.add_argument(
        "--tracker",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a TrackerConfig field (e.g. inside_confirmed=0.25, or =none); repeatable",
    )
    ch = sub.add_parser(
        "changes", help="frames whose tracks a tracker change alters, on any videos (labelled or not)"
    )
    ch.add_argument("videos", nargs="+", type=Path, help="video files")
    ch.add_argument("--tracker", action="append", default=[], metavar="FIELD=VALUE", required=True)
    ch.add_argument(
        "--stream", type=int, default=None, metavar="QUALITY",
        help="as a stream sends it (every frame, JPEG at QUALITY, one lane); default: the clip view",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if args.command == "searchcost":
        from skeleton.paths import data_root

        for video in args.videos:
            print(video, json.dumps({k: round(v, 3) for k, v in search_cost(data_root() / video).items()}))
        return 0
    if args.command == "changes":
        for video in args.videos:
            info = video_info(video)
            dump = dump_clip(info, info.fps, 1, args.stream) if args.stream else dump_clip(info)
            frames = track_changes(dump, _fields(args.tracker))
            print(json.dumps({"video": info.video, "view": dump.view, "frames": len(dump.frames),
                              "changed": frames}), flush=True)
        return 0
    if args.command == "dump":
        for info in _chosen(args.clips):
            dump = dump_clip(info, args.rate, args.lanes, args.jpeg)
            path = dump.save(args.out / _name(dump))
            print(_line(score_dump(dump)[1]), f"-> {path.name}", flush=True)
        return 0
    wanted = {c.video for c in _chosen(args.clips)}
    for path in sorted(args.folder.glob("*.npz")):
        dump = PoseDump.load(path)
        if dump.clip in wanted:
            scored = score_dump(dump, confirm_s=args.confirm_s, tracker=_fields(args.tracker))[1]
            print(_line(scored), f"L{dump.lanes}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
