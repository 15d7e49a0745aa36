"""Long recordings joined from real clips (training.joined): as a video for the real service, and as
skeletons on one time axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_data
from tests.model_helpers import require_cache
from training.joined import DAILY_ACTIVITIES, concatenate_primary, daily_names, join_clips, join_videos


def test_join_videos_plays_the_clips_one_after_the_other(tmp_path: Path) -> None:
    import cv2

    paths = [require_data("upfall", f"Activity{a}", "Trial2Cam1.mp4") for a in (9, 1)]
    out = tmp_path / "joined.mp4"
    parts = join_videos(paths, out)
    frames = []
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        frames.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == sum(frames)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (640, 480)
    cap.release()
    assert [p.name for p in parts] == ["Activity9/Trial2Cam1", "Activity1/Trial2Cam1"]
    assert parts[0].offset == 0 and parts[1].offset == pytest.approx(frames[0] / fps)
    assert parts[1].duration == pytest.approx(frames[1] / fps)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.skeleton_cache
def test_cached_clips_join_on_one_time_axis() -> None:
    from training.skeleton_cache import load_clip

    assert DAILY_ACTIVITIES[0] == 11  # lying first: no cut from standing straight to the floor
    names = [n for n in daily_names(2, 1) if n.split("/")[0] in ("Activity11", "Activity9")]
    clips = [load_clip(require_cache(f"{n}.npz")) for n in names]
    parts = join_clips(names, clips)
    assert parts[1].offset == pytest.approx(parts[0].duration)
    assert parts[0].duration == pytest.approx(clips[0].timestamps[-1] + 1 / clips[0].fps)
    actor = concatenate_primary(clips, parts)
    assert len(actor) == sum(c.num_frames for c in clips)
    assert (np.diff(actor.timestamps) > 0).all()
    first = clips[0].primary_track
    assert first is not None
    np.testing.assert_array_equal(actor.image[: clips[0].num_frames], first.image)
