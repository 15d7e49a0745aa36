"""On-disk cache of extracted skeletons: one ``.npz`` per video, all tracks plus the primary one.

Format (``format_version`` 1), arrays in a compressed npz:

* ``format_version`` int, ``video`` str (path relative to the extraction root),
  ``fps`` float, ``width`` / ``height`` int (pixels of the analysed frames, i.e. the unit of
  ``image``), ``source_width`` / ``source_height`` int (the video's own size),
  ``estimator`` str (JSON of the pose estimator's settings), ``tracker`` str (JSON).
* ``timestamps`` (T,) float64 seconds of every analysed frame.
* ``track_ids`` (N,) int64; ``image`` / ``world`` (N, T, 33, 3) float32, ``visibility``
  (N, T, 33) float32: MediaPipe-33 landmarks per track, NaN (visibility 0) where the track was
  not seen; image in pixels (z in the same scale), world in metres (MediaPipe axes).
* ``primary`` int: index into the track axis of the person performing the action, -1 if none.
* ``stride`` int: every how many video frames one was analysed (1 = all; absent means 1).
* ``track_members`` str: JSON {track id: [online track ids joined into it]} (offline stitching of
  one person's fragments, e.g. after leaving and re-entering the frame; absent means none).

Writes are atomic (temp file + rename), so a file that exists is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.types import MEDIAPIPE_JOINTS, SkeletonSequence

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClipSkeletons:
    """All tracked people of one video, on a shared time axis."""

    video: str
    fps: float
    width: int
    height: int
    timestamps: np.ndarray
    track_ids: tuple[int, ...]
    tracks: list[SkeletonSequence]
    primary: int | None
    source_width: int = 0
    source_height: int = 0
    estimator: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)
    stride: int = 1
    # track id -> ids of the online tracks joined into it by `perception.tracking.clip_tracks.stitch_tracks`
    track_members: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tracks) != len(self.track_ids):
            raise ValueError("tracks and track_ids differ in length")
        if self.primary is not None and not 0 <= self.primary < len(self.tracks):
            raise ValueError(f"primary index {self.primary} out of range for {len(self.tracks)} tracks")

    @property
    def num_frames(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def primary_track(self) -> SkeletonSequence | None:
        """The actor's sequence, or None when nobody was found."""
        return None if self.primary is None else self.tracks[self.primary]


def save_clip(clip: ClipSkeletons, path: str | os.PathLike[str]) -> Path:
    """Write ``clip`` to ``path`` atomically (a crash never leaves a half-written .npz)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n, t = len(clip.tracks), clip.num_frames
    image = np.full((n, t, MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
    world = np.full((n, t, MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
    vis = np.zeros((n, t, MEDIAPIPE_JOINTS), np.float32)
    for i, seq in enumerate(clip.tracks):
        if len(seq) != t:
            raise ValueError(f"track {i} has {len(seq)} frames, clip has {t}")
        image[i], world[i], vis[i] = seq.image, seq.world, seq.visibility
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                format_version=np.int64(FORMAT_VERSION),
                video=np.str_(clip.video),
                fps=np.float64(clip.fps),
                width=np.int64(clip.width),
                height=np.int64(clip.height),
                source_width=np.int64(clip.source_width),
                source_height=np.int64(clip.source_height),
                estimator=np.str_(json.dumps(clip.estimator, sort_keys=True)),
                tracker=np.str_(json.dumps(clip.tracker, sort_keys=True)),
                timestamps=np.asarray(clip.timestamps, np.float64),
                track_ids=np.asarray(clip.track_ids, np.int64),
                image=image,
                world=world,
                visibility=vis,
                primary=np.int64(-1 if clip.primary is None else clip.primary),
                stride=np.int64(clip.stride),
                track_members=np.str_(json.dumps({str(k): list(v) for k, v in clip.track_members.items()})),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_clip(path: str | os.PathLike[str]) -> ClipSkeletons:
    """Read a cached clip written by `save_clip`."""
    with np.load(Path(path), allow_pickle=False) as z:
        version = int(z["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: skeleton cache format {version}, expected {FORMAT_VERSION}; re-extract"
            )
        timestamps = z["timestamps"].astype(np.float64)
        image, world, vis = z["image"], z["world"], z["visibility"]
        tracks = [
            SkeletonSequence(timestamps.copy(), image[i], world[i], vis[i]) for i in range(image.shape[0])
        ]
        primary = int(z["primary"])
        return ClipSkeletons(
            video=str(z["video"]),
            fps=float(z["fps"]),
            width=int(z["width"]),
            height=int(z["height"]),
            timestamps=timestamps,
            track_ids=tuple(int(x) for x in z["track_ids"]),
            tracks=tracks,
            primary=None if primary < 0 else primary,
            source_width=int(z["source_width"]),
            source_height=int(z["source_height"]),
            estimator=json.loads(str(z["estimator"])),
            tracker=json.loads(str(z["tracker"])),
            stride=int(z["stride"]) if "stride" in z.files else 1,
            track_members={int(k): tuple(v) for k, v in json.loads(str(z["track_members"])).items()}
            if "track_members" in z.files
            else {},
        )


def cache_path_for(video: Path, videos_root: Path, out_root: Path) -> Path:
    """Mirror ``video``'s path relative to ``videos_root`` under ``out_root``, suffix ``.npz``."""
    rel = video.absolute().relative_to(videos_root.absolute())
    return out_root / rel.with_suffix(".npz")


def iter_cache(root: str | os.PathLike[str]) -> list[Path]:
    """Every finished cache file under ``root`` (temp files excluded), sorted."""
    return sorted(p for p in Path(root).rglob("*.npz") if not p.name.startswith("."))


def primary_track_differences(reference: ClipSkeletons, other: ClipSkeletons) -> list[str]:
    """How ``other``'s primary person differs from ``reference``'s, bit for bit (empty: identical).

    Compared: the analysed frames' timestamps and size, whether there is a primary person, the
    online tracks joined into it, and its image, world and visibility arrays (NaN equals NaN).
    """
    out = []
    if not np.array_equal(reference.timestamps, other.timestamps):
        out.append(f"timestamps differ ({reference.num_frames} vs {other.num_frames} frames)")
        return out
    if (reference.width, reference.height) != (other.width, other.height):
        out.append(f"frame size {reference.width}x{reference.height} vs {other.width}x{other.height}")
    if reference.primary is None or other.primary is None:
        if (reference.primary is None) != (other.primary is None):
            out.append(f"primary {reference.primary} vs {other.primary}")
        return out
    a, b = reference.tracks[reference.primary], other.tracks[other.primary]
    members_a = reference.track_members.get(reference.track_ids[reference.primary], ())
    members_b = other.track_members.get(other.track_ids[other.primary], ())
    if members_a != members_b:
        out.append(f"primary joins online tracks {members_a} vs {members_b}")
    for name in ("image", "world", "visibility"):
        x, y = getattr(a, name), getattr(b, name)
        if not np.array_equal(x, y, equal_nan=True):
            diff = np.abs(np.nan_to_num(x.astype(np.float64)) - np.nan_to_num(y.astype(np.float64)))
            out.append(f"primary {name} differs (largest difference {diff.max():.3g})")
    return out


def compare_caches(reference_root: Path, other_root: Path) -> dict[str, list[str]]:
    """Clip (path relative to the cache root) -> `primary_track_differences`, for every clip of
    ``reference_root``; a clip missing from ``other_root`` is a difference too."""
    out = {}
    for path in iter_cache(reference_root):
        rel = path.relative_to(reference_root)
        other = Path(other_root) / rel
        if not other.is_file():
            out[str(rel)] = ["missing"]
        else:
            out[str(rel)] = primary_track_differences(load_clip(path), load_clip(other))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m training.skeleton_cache compare REFERENCE OTHER``: exit 1 unless every clip's
    primary person is the same, bit for bit (e.g. a cache re-extracted after a code change)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.skeleton_cache")
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="compare two caches' primary tracks bit for bit")
    compare.add_argument("reference", type=Path)
    compare.add_argument("other", type=Path)
    args = parser.parse_args(argv)
    found = compare_caches(args.reference, args.other)
    differing = {clip: why for clip, why in found.items() if why}
    for clip, why in differing.items():
        print(f"{clip}: {'; '.join(why)}")
    print(f"{len(found) - len(differing)}/{len(found)} clips: the same primary track, bit for bit")
    return 1 if differing or not found else 0


if __name__ == "__main__":
    raise SystemExit(main())
