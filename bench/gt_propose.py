"""Draft keyframes for the tracking ground truth (``bench.groundtruth``), to be checked by eye.

How a draft is made (every keyframe is then drawn, looked at and fixed by hand):

1. pose on every frame, in several passes (the service's own estimator, and 3x1 overlapping tiles
   plus the whole frame with room for 6 people, which finds small people the whole frame misses);
2. each pose becomes a ground-truth-style box (`body_box`: landmarks plus the top of the head,
   which MediaPipe has no landmark for);
3. the passes' boxes are merged per frame (IoU >= 0.5 is one person) and linked over time into
   numbered proposal tracks (IoU with the track's last box, for gaps up to 1 s);
4. per track, keyframes are chosen so that linear interpolation stays within IoU 0.8 of the
   (median-smoothed) per-frame boxes, and at least every 0.5 s.

    python -m bench.gt_propose clips/felix_exercise.avi --out /tmp/gt/felix.csv [--cache /tmp/gt/poses]

The tracks' numbers are arbitrary: the person ids of the ground truth are given by hand when the
draft is checked. Pose runs are cached (``--cache``), as they take minutes per clip on one core.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from bench.groundtruth import MAX_KEYFRAME_GAP_S, Box, Keyframe, write_keyframes
from skeleton.paths import data_root

log = logging.getLogger("bench.gt_propose")

HEAD = np.arange(0, 11)  # nose, eyes, ears, mouth
PASSES: dict[str, dict[str, Any]] = {
    "service": {},  # the service's default estimator
    "tiles3": {"max_people": 6, "tiles": {"cols": 3, "rows": 1, "overlap": 0.25, "full_frame": True}},
}


def torso_slab(xy: np.ndarray) -> tuple[float, float] | None:
    """x range an upright torso covers seen from the side, in pixels, or None.

    Landmarks are joint centres: seen from the side an upright torso's back and front lie about
    0.3 torso lengths either side of the shoulder-hip line, beyond any joint (checked on UP-Fall
    Activity6 Cam1, where the landmark box covered half of a side-on walker). From the front the
    shoulders are wider than that and the slab adds nothing.
    """
    shoulders, hips = xy[[11, 12]], xy[[23, 24]]
    torso_vec = shoulders.mean(axis=0) - hips.mean(axis=0)
    torso = float(np.linalg.norm(torso_vec))
    if torso < 1e-6:
        return None
    upright = abs(float(torso_vec[1])) / torso
    frontal = min(1.0, abs(float(shoulders[0, 0] - shoulders[1, 0])) / (0.7 * torso))
    half = 0.3 * torso * (1.0 - frontal) * upright
    centre = float(np.concatenate([shoulders, hips])[:, 0].mean())
    return centre - half, centre + half


def body_box(image: np.ndarray, width: int, height: int, pad_sides: bool = True) -> Box:
    """Head top to feet, arms included, clipped to the frame: the ground truth's box convention.

    The landmark box lacks the top of the head (the highest landmarks are the eyes and ears):
    the head is taken as a circle around its landmarks' centre with 1.6x their largest distance
    from it (the ears are about 0.6 head radii from the centre seen from the front). Sideways
    the box also covers an upright torso's thickness (`torso_slab`).
    """
    xy = np.asarray(image, np.float64)[:, :2]
    head = xy[HEAD]
    centre = head.mean(axis=0)
    radius = 1.6 * float(np.max(np.linalg.norm(head - centre, axis=1)))
    x0 = min(float(xy[:, 0].min()), centre[0] - radius)
    x1 = max(float(xy[:, 0].max()), centre[0] + radius)
    slab = torso_slab(xy) if pad_sides else None
    if slab is not None:
        x0, x1 = min(x0, slab[0]), max(x1, slab[1])
    y0 = min(float(xy[:, 1].min()), centre[1] - radius)
    y1 = float(xy[:, 1].max()) + 0.15 * radius  # soles below the heel / toe landmarks
    return (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run_pass(video: Path, options: dict[str, Any]) -> dict[str, np.ndarray]:
    """Pose on every frame of ``video``: frame (1-based), image landmarks, visibility, score per pose."""
    from perception.pose.estimator import create_pose_estimator
    from perception.video import VideoReader
    from service.core.config import Settings

    opts = dict(options)
    est = create_pose_estimator("tasks", **opts) if opts else Settings().pose_spec().create()
    frames, images, vis, scores = [], [], [], []
    try:
        with VideoReader(video) as reader:
            for f in reader:
                for p in est.estimate(f.rgb, f.timestamp_s):
                    frames.append(f.index + 1)
                    images.append(p.image)
                    vis.append(p.visibility)
                    scores.append(p.score)
    finally:
        est.close()
    return {
        "frame": np.asarray(frames, np.int64),
        "image": np.asarray(images, np.float32).reshape(-1, 33, 3),
        "visibility": np.asarray(vis, np.float32).reshape(-1, 33),
        "score": np.asarray(scores, np.float32),
    }


def cached_pass(video: Path, name: str, cache: Path) -> dict[str, np.ndarray]:
    path = cache / f"{str(video.relative_to(data_root()).with_suffix('')).replace('/', '_')}.{name}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    log.info("pose pass %s on %s", name, video)
    out = run_pass(video, PASSES[name])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def merged_boxes(
    passes: list[dict[str, np.ndarray]], width: int, height: int, frames: int, pad_sides: bool = True
) -> dict[int, list[tuple[Box, float]]]:
    """Per frame, the passes' boxes with duplicates (IoU >= 0.5) merged, best score first."""
    out: dict[int, list[tuple[Box, float]]] = {}
    for f in range(1, frames + 1):
        cands: list[tuple[Box, float]] = []
        for p in passes:
            for i in np.flatnonzero(p["frame"] == f):
                cands.append((body_box(p["image"][i], width, height, pad_sides), float(p["score"][i])))
        cands.sort(key=lambda c: -c[1])
        kept: list[tuple[Box, float]] = []
        for box, score in cands:
            if all(iou(box, k[0]) < 0.5 for k in kept):
                kept.append((box, score))
        out[f] = kept
    return out


def link(
    boxes: dict[int, list[tuple[Box, float]]], max_gap: int, min_iou: float = 0.2
) -> dict[int, dict[int, Box]]:
    """Proposal tracks {track: {frame: box}} by Hungarian matching on IoU with each live track's
    last box (tracks unseen for more than ``max_gap`` frames end)."""
    tracks: dict[int, dict[int, Box]] = {}
    last: dict[int, int] = {}
    next_id = 1
    for f in sorted(boxes):
        live = [t for t in tracks if f - last[t] <= max_gap]
        cands = boxes[f]
        pairs: list[tuple[int, int]] = []
        if live and cands:
            cost = np.array([[1 - iou(tracks[t][last[t]], c[0]) for c in cands] for t in live])
            rows, cols = linear_sum_assignment(cost)
            pairs = [(live[r], c) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= 1 - min_iou]
        used = {c for _, c in pairs}
        for t, c in pairs:
            tracks[t][f] = cands[c][0]
            last[t] = f
        for c, (box, _) in enumerate(cands):
            if c not in used:
                tracks[next_id] = {f: box}
                last[next_id] = f
                next_id += 1
    return tracks


def smooth(track: dict[int, Box], radius: int = 2) -> dict[int, Box]:
    """Per-coordinate running median over seen frames (landmark jitter would add keyframes)."""
    frames = sorted(track)
    arr = np.array([track[f] for f in frames])
    out = {}
    for i, f in enumerate(frames):
        lo, hi = max(0, i - radius), min(len(frames), i + radius + 1)
        out[f] = tuple(float(v) for v in np.median(arr[lo:hi], axis=0))
    return out  # type: ignore[return-value]


def choose_keyframes(track: dict[int, Box], max_gap: int, min_iou: float = 0.8) -> list[int]:
    """Frames such that interpolating between them stays within ``min_iou`` of the track, at most
    ``max_gap`` frames apart, and at every run's first and last frame (runs split at gaps > max_gap)."""
    frames = sorted(track)
    spans: list[list[int]] = [[frames[0]]]
    for f in frames[1:]:
        if f - spans[-1][-1] > max_gap:
            spans.append([f])
        else:
            spans[-1].append(f)
    keys: set[int] = set()
    for span in spans:
        chosen = {span[0], span[-1]}
        todo = [(span[0], span[-1])]
        while todo:
            a, b = todo.pop()
            worst, worst_iou = None, 1.0
            for f in range(a + 1, b):
                if f not in track:
                    continue
                t = (f - a) / (b - a)
                box = tuple((1 - t) * p + t * q for p, q in zip(track[a], track[b], strict=True))
                v = iou(box, track[f])  # type: ignore[arg-type]
                if v < worst_iou:
                    worst, worst_iou = f, v
            if worst is not None and worst_iou < min_iou:
                chosen.add(worst)
                todo += [(a, worst), (worst, b)]
        ordered = sorted(chosen)
        for a, b in itertools.pairwise(ordered):  # at least every max_gap frames
            n = -(-(b - a) // max_gap)
            for k in range(1, n):
                f = a + round(k * (b - a) / n)
                nearest = min((g for g in span if a < g < b), key=lambda g: abs(g - f), default=None)
                if nearest is not None:
                    chosen.add(nearest)
        keys |= chosen
    return sorted(keys)


def propose(
    video: Path, cache: Path, passes: list[str], pad_sides: bool = True
) -> tuple[list[Keyframe], dict[int, dict[int, Box]]]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    results = [cached_pass(video, name, cache) for name in passes]
    boxes = merged_boxes(results, width, height, frames, pad_sides)
    max_gap = int(np.floor(MAX_KEYFRAME_GAP_S * fps + 1e-6))
    tracks = link(boxes, max_gap=round(fps))
    keyframes: list[Keyframe] = []
    for tid, track in sorted(tracks.items()):
        if len(track) < 3:
            continue
        sm = smooth(track)
        for f in choose_keyframes(sm, max_gap):
            keyframes.append(Keyframe(f, tid, sm[f], 1.0, "in"))
    return keyframes, tracks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gt_propose",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="path relative to the data root")
    p.add_argument("--out", type=Path, required=True, help="draft keyframes CSV")
    p.add_argument("--cache", type=Path, default=Path("/tmp/skelact-gt-poses"))
    p.add_argument("--passes", default=",".join(PASSES), help=f"comma-separated, from {sorted(PASSES)}")
    p.add_argument(
        "--no-side-padding",
        action="store_true",
        help="landmark extent only sideways (how the clips/ drafts were made; their people face the camera)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    keyframes, tracks = propose(
        data_root() / args.video, args.cache, args.passes.split(","), not args.no_side_padding
    )
    write_keyframes(args.out, keyframes)
    for tid, track in sorted(tracks.items()):
        if len(track) >= 3:
            print(f"track {tid}: frames {min(track)}-{max(track)} seen {len(track)}")
    print(f"{len(keyframes)} keyframes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
