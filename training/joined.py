"""Long non-fall recordings: UP-Fall's daily-activity trials (Activities 6-11) joined end to end per
camera, as skeletons (false alarms per hour offline) and as one video (the same through the real
service: ``python -m training.joined --out artifacts/joined``).

Two honest ways to cross a join, both provided: as **consecutive clips of one stream**
(``join_clips``: every clip keeps its own tracks, the person leaves at a cut and a new track starts,
as when someone walks out and back in) or with the actor's track **continued across the joins**
(``concatenate_primary``: windows straddle the cut, e.g. a jump cut from jumping to lying on the
floor). A joined video leaves that choice to the service's tracker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skeleton.paths import data_root
from skeleton.types import MEDIAPIPE_JOINTS, SkeletonSequence
from training.skeleton_cache import ClipSkeletons

# Laying first: a cut from an upright activity straight to lying on the floor is, in any skeleton,
# a fall (standing, then on the floor a frame later) that no real recording can show without the
# drop; from lying to walking is a cut to getting up, and the others join upright activities.
DAILY_ACTIVITIES: tuple[int, ...] = (11, 6, 7, 8, 9, 10)


@dataclass(frozen=True)
class JoinedPart:
    """One source recording inside a joined one: it plays from ``offset`` for ``duration`` seconds."""

    name: str
    offset: float
    duration: float


def daily_names(trial: int, camera: int, activities: Sequence[int] = DAILY_ACTIVITIES) -> list[str]:
    """``Activity{a}/Trial{t}Cam{c}`` of the daily activities, in joining order."""
    return [f"Activity{a}/Trial{trial}Cam{camera}" for a in activities]


def clip_duration(clip: ClipSkeletons) -> float:
    """Seconds a cached clip covers (its last analysed frame plus one frame interval)."""
    step = clip.stride / clip.fps if clip.fps > 0 else 0.0
    return float(clip.timestamps[-1]) + step if clip.num_frames else 0.0


def join_clips(names: Sequence[str], clips: Sequence[ClipSkeletons]) -> list[JoinedPart]:
    """Where each clip plays in the joined recording: one after the other, no gap."""
    parts, offset = [], 0.0
    for name, clip in zip(names, clips, strict=True):
        duration = clip_duration(clip)
        parts.append(JoinedPart(name, offset, duration))
        offset += duration
    return parts


def concatenate_primary(clips: Sequence[ClipSkeletons], parts: Sequence[JoinedPart]) -> SkeletonSequence:
    """The actors' tracks of ``clips`` end to end on the joined time axis (one person throughout;
    frames where a clip has no actor stay unseen). Every clip must have the same frame size."""
    if len({(c.width, c.height) for c in clips}) > 1:
        raise ValueError("clips of different frame sizes cannot share image coordinates")
    times, image, world, vis = [], [], [], []
    for clip, part in zip(clips, parts, strict=True):
        n = clip.num_frames
        seq = clip.primary_track
        times.append(clip.timestamps + part.offset)
        if seq is None:
            image.append(np.full((n, MEDIAPIPE_JOINTS, 3), np.nan, np.float32))
            world.append(np.full((n, MEDIAPIPE_JOINTS, 3), np.nan, np.float32))
            vis.append(np.zeros((n, MEDIAPIPE_JOINTS), np.float32))
        else:
            image.append(seq.image)
            world.append(seq.world)
            vis.append(seq.visibility)
    return SkeletonSequence(np.concatenate(times), np.concatenate(image), np.concatenate(world),
                            np.concatenate(vis))


def join_videos(paths: Sequence[Path], out: Path) -> list[JoinedPart]:
    """Write ``paths`` one after the other into ``out`` (OpenCV, mp4v) at the first video's frame
    rate and size (others are resized); returns where each one plays."""
    import cv2

    if not paths:
        raise ValueError("nothing to join")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    writer = None
    parts, offset = [], 0.0
    try:
        for path in paths:
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                raise FileNotFoundError(f"cannot read {path}")
            if writer is None:
                fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
                size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
            frames = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if (frame.shape[1], frame.shape[0]) != size:
                    frame = cv2.resize(frame, size)
                writer.write(frame)
                frames += 1
            cap.release()
            parts.append(JoinedPart(f"{path.parent.name}/{path.stem}", offset, frames / fps))
            offset += frames / fps
    finally:
        if writer is not None:
            writer.release()
    tmp.replace(out)
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.joined", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for Trial{t}Cam{c}.mp4 (+ .json parts)")
    ap.add_argument("--data-dir", type=Path, default=None, help="data root (default $SKELACT_DATA_DIR)")
    ap.add_argument("--trials", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    import json

    root = (args.data_dir or data_root()) / "upfall"
    for t in args.trials:
        for c in args.cameras:
            paths = [root / f"{n}.mp4" for n in daily_names(t, c)]
            out = args.out / f"Trial{t}Cam{c}.mp4"
            parts = join_videos(paths, out)
            out.with_suffix(".json").write_text(json.dumps([p.__dict__ for p in parts], indent=1))
            print(f"{out}: {parts[-1].offset + parts[-1].duration:.1f} s from {len(parts)} clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
