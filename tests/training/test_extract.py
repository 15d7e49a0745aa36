"""Extraction CLI on real clips: mirrored .npz cache, loader, resumability, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skeleton.types import MEDIAPIPE_JOINTS
from tests.conftest import require_data
from training.extract import main
from training.skeleton_cache import ClipSkeletons, iter_cache, load_clip, save_clip


@pytest.fixture()
def videos(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "solo").mkdir(parents=True)
    (root / "solo" / "tai_chi.mp4").symlink_to(require_data("clips", "stgcn_ta_chi.mp4"))
    (root / "lift.mp4").symlink_to(require_data("clips", "stgcn_clean_and_jerk.mp4"))
    return root


def _args(videos: Path, out: Path, *extra: str) -> list[str]:
    return ["--videos", str(videos), "--out", str(out), "--pattern", "**/*.mp4", "--max-people", "1",
            "--stride", "20", *extra]  # fmt: skip


def test_cli_writes_mirrored_cache_and_resumes(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cache"
    assert main(_args(videos, out)) == 0
    files = iter_cache(out)
    assert [p.relative_to(out).as_posix() for p in files] == ["lift.npz", "solo/tai_chi.npz"]
    assert "extracted 2, skipped 0" in capsys.readouterr().out

    clip = load_clip(out / "solo" / "tai_chi.npz")
    assert isinstance(clip, ClipSkeletons)
    assert clip.video == "solo/tai_chi.mp4" and (clip.width, clip.height) == (340, 256)
    assert clip.fps == pytest.approx(29.97, abs=0.01) and clip.stride == 20
    assert clip.num_frames == 15 and np.all(np.diff(clip.timestamps) > 0)
    assert clip.primary is not None and clip.primary_track is clip.tracks[clip.primary]
    primary = clip.primary_track
    assert primary.image.shape == (15, MEDIAPIPE_JOINTS, 3)
    assert primary.visibility.shape == (15, MEDIAPIPE_JOINTS)
    assert np.isfinite(primary.image).all(axis=(1, 2)).mean() > 0.8  # the dancer is seen nearly always
    assert clip.estimator["name"].startswith("mediapipe") and clip.estimator["max_people"] == 1

    # second run: nothing to do, files untouched
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert main(_args(videos, out)) == 0
    assert "extracted 0, skipped 2" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    # an interrupted run leaves only a temp file, which is ignored and redone
    (out / "lift.npz").unlink()
    (out / ".lift.npz.123.tmp").write_bytes(b"partial")
    assert main(_args(videos, out)) == 0
    assert "extracted 1, skipped 1" in capsys.readouterr().out
    assert [p.name for p in iter_cache(out)] == ["lift.npz", "tai_chi.npz"]

    # --retrack re-runs tracking/stitching/primary on the cached poses, no pose model needed
    before = load_clip(out / "solo" / "tai_chi.npz")
    assert main(["--retrack", "--out", str(out)]) == 0
    assert "retracked 2 files" in capsys.readouterr().out
    after = load_clip(out / "solo" / "tai_chi.npz")
    assert after.primary_track is not None and before.primary_track is not None
    np.testing.assert_array_equal(after.primary_track.image, before.primary_track.image)

    # the cache records the ROI association; --association picks MediaPipe's own rule (no key)
    assert before.estimator["association"] == "one-to-one"
    assert main(_args(videos, out, "--force", "--association", "mediapipe")) == 0
    assert "extracted 2, skipped 0" in capsys.readouterr().out
    assert "association" not in load_clip(out / "solo" / "tai_chi.npz").estimator


def test_cli_reports_undecodable_videos(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (videos / "solo" / "tai_chi.mp4").unlink()
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    out = tmp_path / "cache"
    assert main(_args(videos, out)) == 1  # failures make a non-zero exit, the rest still done
    captured = capsys.readouterr()
    assert "extracted 1, skipped 0 (already done), failed 1" in captured.out
    assert "broken.mp4" in captured.err
    assert [p.name for p in iter_cache(out)] == ["lift.npz"]


def test_save_load_roundtrip_keeps_nan_and_metadata(tmp_path: Path) -> None:
    from skeleton.types import SkeletonSequence

    t = np.arange(4) / 10.0
    img = np.full((4, MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
    img[1:] = np.random.default_rng(0).normal(size=(3, MEDIAPIPE_JOINTS, 3))
    seq = SkeletonSequence(t, img, img.copy(), np.where(np.isnan(img[..., 0]), 0, 0.9).astype(np.float32))
    clip = ClipSkeletons("a/b.mp4", 10.0, 64, 48, t, (5,), [seq], 0, estimator={"name": "x"}, stride=2)
    path = save_clip(clip, tmp_path / "a" / "b.npz")
    back = load_clip(path)
    assert (
        back.track_ids == (5,) and back.primary == 0 and back.stride == 2 and back.estimator == {"name": "x"}
    )
    np.testing.assert_array_equal(back.tracks[0].image, img)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_lanes_alternate_estimators(tmp_path: Path) -> None:
    """``lanes=2``: analysed frame i on estimator i mod 2, as /recognize with two clip pose lanes.
    UP-Fall Activity6/Trial1Cam1 from frame 186 (re-encoded), the walker entering: each of two
    estimators sees every other frame and so finds him differently from one estimator that sees
    them all (measured 2026-12-03 with the search windows, people per frame from frame 1: one
    lane 1, 1, 1, 0, 1, two lanes 1, 0, 1, 0, 1; before them he was first found at frame 5)."""
    from tests.service_helpers import trim_video
    from training.extract import extract_video

    clip = trim_video(require_data("upfall", "Activity6", "Trial1Cam1.mp4"), tmp_path / "a6.mp4", 186, 12)

    from perception.tracking.tracker import TrackerConfig

    every_track = TrackerConfig(confirm_hits=1, confirm_s=0.0)  # no probation: every skeleton kept

    def people_per_frame(lanes: int) -> list[int]:
        c = extract_video(
            clip, max_people=2, tracker_config=every_track, stitch=False, min_track_frames=1, lanes=lanes
        )
        return np.stack([np.isfinite(t.image[:, 0, 0]) for t in c.tracks]).sum(axis=0).tolist()

    one, two = people_per_frame(1), people_per_frame(2)
    assert len(one) == len(two) == 12
    assert one[:5] == [1, 1, 1, 0, 1] and two[:5] == [1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="lanes"):
        extract_video(clip, lanes=0)
