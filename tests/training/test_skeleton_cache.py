"""Comparing two skeleton caches' primary tracks bit for bit (the check after moving pose or
tracking code: `python -m training.skeleton_cache compare REFERENCE OTHER`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from skeleton.types import MEDIAPIPE_JOINTS, SkeletonSequence
from training.skeleton_cache import ClipSkeletons, compare_caches, main, primary_track_differences, save_clip


def _clip(seed: int = 0, frames: int = 6) -> ClipSkeletons:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 18.0
    tracks = []
    for _ in range(2):
        image = rng.uniform(0, 400, (frames, MEDIAPIPE_JOINTS, 3)).astype(np.float32)
        image[0] = np.nan  # unseen in the first frame
        world = rng.normal(size=(frames, MEDIAPIPE_JOINTS, 3)).astype(np.float32)
        world[0] = np.nan
        vis = rng.uniform(0, 1, (frames, MEDIAPIPE_JOINTS)).astype(np.float32)
        tracks.append(SkeletonSequence(t, image, world, vis))
    return ClipSkeletons("a.mp4", 18.0, 640, 480, t, (3, 5), tracks, 1, track_members={3: (3,), 5: (5, 8)})


def test_identical_primary_tracks_have_no_differences() -> None:
    assert primary_track_differences(_clip(), _clip()) == []  # NaN where unseen counts as equal


def test_every_kind_of_difference_is_reported() -> None:
    ref = _clip()
    moved = _clip()
    moved.tracks[1].image[3, 0, 0] += 0.5
    assert primary_track_differences(ref, moved) == ["primary image differs (largest difference 0.5)"]
    other_person = replace(_clip(), primary=0)
    assert "primary joins online tracks (5, 8) vs (3,)" in primary_track_differences(ref, other_person)
    assert primary_track_differences(ref, replace(_clip(), primary=None)) == ["primary 1 vs None"]
    shorter = _clip(frames=5)
    assert primary_track_differences(ref, shorter)[0].startswith("timestamps differ")


def test_compare_caches_and_its_command(tmp_path: Path) -> None:
    ref, new = tmp_path / "ref", tmp_path / "new"
    save_clip(_clip(), ref / "A1" / "one.npz")
    save_clip(_clip(), ref / "A1" / "two.npz")
    save_clip(_clip(), new / "A1" / "one.npz")
    assert compare_caches(ref, new) == {"A1/one.npz": [], "A1/two.npz": ["missing"]}
    assert main(["compare", str(ref), str(new)]) == 1
    save_clip(_clip(), new / "A1" / "two.npz")
    assert main(["compare", str(ref), str(new)]) == 0
