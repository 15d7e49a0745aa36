"""Extract skeletons from a folder of videos into the skeleton cache (one .npz per video).

Runs exactly the service's stages -- `perception.video` decoding, `perception.pose` estimation
and `perception.tracking` -- so a model trained on the cache sees what the service will feed it.

    python -m training.extract --videos DIR --out cache/skeletons [--pattern '**/*.mp4'] [--max-people N]

Resumable: finished files are skipped (writes are atomic, so an existing file is complete).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from perception.pose.estimator import create_pose_estimator
from perception.pose.graph import ASSOCIATIONS
from perception.pose.lanes import MIN_LANE_FPS, default_lanes, run_lanes
from perception.pose.person import nms_poses, pose_from_pixels
from perception.tracking.clip_tracks import TrackHistory, clip_tracks, select_primary_track
from perception.tracking.tracker import Tracker, TrackerConfig
from perception.video import DecodeError, Frame, VideoReader
from skeleton.paths import data_root, missing_data
from skeleton.types import PersonPose
from training.skeleton_cache import ClipSkeletons, cache_path_for, iter_cache, load_clip, save_clip

log = logging.getLogger("training.extract")

DEFAULT_PATTERNS = ("**/*.mp4", "**/*.avi", "**/*.webm", "**/*.mov", "**/*.mkv")


def extract_video(
    video: str | Path,
    kind: str = "tasks",
    max_people: int = 4,
    max_side: int | None = None,
    estimator_options: dict[str, Any] | None = None,
    tracker_config: TrackerConfig | None = None,
    min_track_frames: int = 3,
    name: str | None = None,
    progress: bool = False,
    stride: int = 1,
    stitch: bool = True,
    max_frames: int | None = None,
    lanes: int | None = None,
    since_s: float = 0.0,
    until_s: float | None = None,
) -> ClipSkeletons:
    """Decode, estimate poses, track, and pick the primary person of one video.

    Tracks seen in fewer than ``min_track_frames`` frames (detector blips) are dropped; with
    ``stitch`` the fragments of one person are joined (`perception.tracking.clip_tracks.stitch_tracks`).
    ``stride`` > 1 analyses every stride-th frame only, ``max_frames`` stops after that many
    analysed frames (quick looks, tests). ``lanes``: estimators the analysed frames alternate
    between, in ``POST /recognize``'s order (`perception.pose.lanes.run_lanes`); None: as many as
    ``/recognize`` uses by default (`perception.pose.lanes.default_lanes`), so a model is trained
    on the poses the service gives it. Only frames timed in [``since_s``, ``until_s``] are
    analysed (the labelled part of a long recording; the rest is decoded, not posed).
    """
    if stride < 1 or (lanes is not None and lanes < 1):
        raise ValueError("stride and lanes must be >= 1")
    reader = VideoReader(video, max_side=max_side)
    if lanes is None:
        lanes = default_lanes(reader.info.fps / stride if reader.info.fps else None)
    estimators = [
        create_pose_estimator(kind, max_people=max_people, **(estimator_options or {})) for _ in range(lanes)
    ]
    estimator = estimators[0]
    tracker = Tracker(tracker_config)
    history = TrackHistory()
    size = (0, 0)

    def analysed() -> Iterator[Frame]:
        frames = tqdm(
            reader, total=reader.info.frame_count or None, unit="f", leave=False, disable=not progress
        )
        taken = 0
        for frame in frames:
            if frame.index % stride or frame.timestamp_s < since_s:
                continue
            if until_s is not None and frame.timestamp_s > until_s:
                break
            if max_frames is not None and taken >= max_frames:
                break
            taken += 1
            yield frame

    def track(frame: Frame, poses: tuple[PersonPose, ...], _pose_s: float) -> None:
        nonlocal size
        size = (frame.width, frame.height)
        history.add(tracker.update(poses, frame.timestamp_s, size))

    try:
        run_lanes(analysed(), estimators, track)
        config = estimator.config() if hasattr(estimator, "config") else {"name": estimator.name}
    finally:
        for est in estimators:
            est.close()
        reader.close()
    return clip_from_history(
        history,
        tracker.config,
        video=name or Path(video).name,
        fps=reader.info.fps,
        width=size[0],
        height=size[1],
        source_width=reader.info.width,
        source_height=reader.info.height,
        estimator=config,
        stride=stride,
        min_track_frames=min_track_frames,
        stitch=stitch,
    )


def clip_from_history(
    history: TrackHistory,
    tracker_config: TrackerConfig,
    *,
    video: str,
    fps: float,
    width: int,
    height: int,
    source_width: int,
    source_height: int,
    estimator: dict[str, Any],
    stride: int,
    min_track_frames: int = 3,
    stitch: bool = True,
) -> ClipSkeletons:
    """Tracks of a finished clip -> `ClipSkeletons`: drop blips, stitch fragments, pick the actor."""
    sequences, members = clip_tracks(history, (width, height), stitch, min_track_frames)
    ids = tuple(sorted(sequences))
    tracks = [sequences[i] for i in ids]
    primary = select_primary_track(
        tracks, frame_height=float(height) or None, clip_frames=len(history), frame_width=float(width) or None
    )
    return ClipSkeletons(
        video=video,
        fps=fps,
        width=width,
        height=height,
        timestamps=np.asarray(history.timestamps, np.float64),
        track_ids=ids,
        tracks=tracks,
        primary=primary,
        source_width=source_width,
        source_height=source_height,
        estimator=estimator,
        tracker=asdict(tracker_config),
        stride=stride,
        track_members={i: members[i] for i in ids},
    )


def retrack_clip(
    clip: ClipSkeletons,
    tracker_config: TrackerConfig | None = None,
    min_track_frames: int = 3,
    stitch: bool = True,
) -> ClipSkeletons:
    """Re-run duplicate removal, tracking, stitching and primary choice on cached poses (no pose model).

    Every frame's people are rebuilt from all cached tracks, so improving the tracker does not
    need the slow pose pass again. Blips dropped at extraction (< ``min_track_frames``) stay lost.
    """
    opts = clip.estimator
    iou = float(opts.get("dedupe_iou", 0.6))
    kpt = float(opts.get("dedupe_keypoint_distance", 0.15))
    tracker = Tracker(tracker_config)
    history = TrackHistory()
    for k, t in enumerate(clip.timestamps):
        people = [
            pose_from_pixels(seq.image[k], seq.world[k], seq.visibility[k], clip.width, clip.height)
            for seq in clip.tracks
            if np.isfinite(seq.image[k, :, :2]).all()
        ]
        history.add(tracker.update(nms_poses(people, iou, kpt), float(t), (clip.width, clip.height)))
    return clip_from_history(
        history,
        tracker.config,
        video=clip.video,
        fps=clip.fps,
        width=clip.width,
        height=clip.height,
        source_width=clip.source_width,
        source_height=clip.source_height,
        estimator=clip.estimator,
        stride=clip.stride,
        min_track_frames=min_track_frames,
        stitch=stitch,
    )


def find_videos(root: Path, patterns: Sequence[str]) -> list[Path]:
    """Videos under ``root`` matching any glob pattern, sorted, without duplicates."""
    found = {p.absolute() for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def extract_to_cache(video: Path, rel: str, out: Path, extract_options: dict[str, Any]) -> str:
    """Extract one video and write its cache file atomically; returns the log line."""
    t0 = time.perf_counter()
    clip = extract_video(video, name=rel, **extract_options)
    save_clip(clip, out)
    ms = 1000 * (time.perf_counter() - t0) / max(clip.num_frames, 1)
    tracks = len(clip.tracks)
    return f"{rel}: {clip.num_frames} frames, {tracks} tracks, primary={clip.primary}, {ms:.1f} ms/frame"


def run(
    videos_root: Path,
    out_root: Path,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    force: bool = False,
    jobs: int = 1,
    **extract_options: Any,
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Extract every matching video; returns (written, skipped, failed with reasons).

    ``jobs`` > 1 extracts that many videos at once in worker processes (MediaPipe's CPU path
    uses about one core per video, so this is how extraction uses a multi-core machine).
    """
    videos = find_videos(videos_root, patterns)
    written: list[Path] = []
    skipped: list[Path] = []
    failed: list[tuple[Path, str]] = []
    todo: list[tuple[Path, str, Path]] = []
    for video in videos:
        out = cache_path_for(video, videos_root, out_root)
        if out.exists() and not force:
            skipped.append(out)
        else:
            todo.append((video, str(video.relative_to(videos_root.absolute())), out))
    show = sys.stderr.isatty() or bool(extract_options.get("progress"))
    if jobs > 1:
        extract_options = {**extract_options, "progress": False}
    # Spawned (not forked) workers: MediaPipe's threads do not survive a fork.
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) if jobs > 1 else None
    try:
        if pool is None:
            results = ((item, _guarded(partial(extract_to_cache, *item, extract_options))) for item in todo)
        else:
            futures = {pool.submit(extract_to_cache, *item, extract_options): item for item in todo}
            results = ((futures[f], _guarded(f.result)) for f in as_completed(futures))
        bar = tqdm(results, total=len(todo), unit="video", disable=not show)
        for (video, rel, out), (line, error) in bar:
            if error is not None:
                log.error("skipping %s: %s", rel, error)
                failed.append((video, error))
            else:
                written.append(out)
                log.info("%s", line)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return written, skipped, failed


def _guarded(get: Callable[[], str]) -> tuple[str, str | None]:
    """(log line, None) or ("", reason) when the video could not be decoded."""
    try:
        return get(), None
    except DecodeError as exc:
        return "", exc.reason


def retrack_cache(out_root: Path, min_track_frames: int = 3, stitch: bool = True) -> int:
    """`retrack_clip` every cache file under ``out_root`` in place (atomic rewrites)."""
    files = iter_cache(out_root)
    for path in tqdm(files, unit="clip", disable=not sys.stderr.isatty()):
        clip = retrack_clip(load_clip(path), min_track_frames=min_track_frames, stitch=stitch)
        save_clip(clip, path)
        log.info("%s: %d tracks, primary=%s", clip.video, len(clip.tracks), clip.primary)
    return len(files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.extract", description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, help="folder searched for videos")
    parser.add_argument(
        "--out", type=Path, required=True, help="cache folder (mirrors the videos' relative paths)"
    )
    parser.add_argument(
        "--pattern", action="append", help="glob under --videos (repeatable); default: common video suffixes"
    )
    parser.add_argument("--max-people", type=int, default=4, help="most people tracked per frame (default 4)")
    parser.add_argument("--kind", default="tasks", choices=("tasks", "legacy"), help="pose estimator")
    parser.add_argument(
        "--max-side", type=int, default=None, help="downscale frames so the longer side is at most this"
    )
    parser.add_argument(
        "--tiles", action="store_true", help="also run pose on overlapping tiles (small people)"
    )
    parser.add_argument(
        "--association",
        choices=ASSOCIATIONS,
        default=None,
        help="tasks estimator: how detections join tracked people (default: the service's, one-to-one)",
    )
    parser.add_argument("--min-track-frames", type=int, default=3, help="drop tracks seen in fewer frames")
    parser.add_argument("--stride", type=int, default=1, help="analyse every N-th frame only")
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="pose lanes per video (default: as POST /recognize, one per core while each lane sees "
        f"{MIN_LANE_FPS:g} frames/s; here up to {default_lanes()})",
    )
    parser.add_argument("--no-stitch", action="store_true", help="keep the online tracker's fragments apart")
    parser.add_argument(
        "--retrack",
        action="store_true",
        help="no pose pass: re-run tracking/stitching/primary on the .npz files already in --out",
    )
    parser.add_argument("--force", action="store_true", help="re-extract files that already exist")
    parser.add_argument(
        "--jobs", type=int, default=1, help=f"videos extracted at once (this machine: {os.cpu_count()} cores)"
    )
    parser.add_argument("--progress", action="store_true", help="show progress bars even without a terminal")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.retrack:
        done = retrack_cache(args.out, min_track_frames=args.min_track_frames, stitch=not args.no_stitch)
        print(f"retracked {done} files in {args.out}")
        return 0
    if args.videos is None or not args.videos.is_dir():
        print(f"error: {missing_data('a folder of videos', args.videos or data_root(), 'or pass --videos')}",
              file=sys.stderr)
        return 2
    options: dict[str, Any] = {"tiles": True} if args.tiles else {}
    if args.association is not None:
        options["association"] = args.association
    written, skipped, failed = run(
        args.videos,
        args.out,
        patterns=args.pattern or DEFAULT_PATTERNS,
        force=args.force,
        jobs=max(1, args.jobs),
        kind=args.kind,
        max_people=args.max_people,
        max_side=args.max_side,
        estimator_options=options,
        min_track_frames=args.min_track_frames,
        progress=args.progress,
        stride=args.stride,
        stitch=not args.no_stitch,
        lanes=args.lanes,
    )
    print(
        f"extracted {len(written)}, skipped {len(skipped)} (already done), failed {len(failed)} -> {args.out}"
    )
    for video, reason in failed:
        print(f"FAILED {video}: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
