"""The committed tracking ground truth (groundtruth/) and its drawing script, on the real clips."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from bench.groundtruth import (
    MAX_KEYFRAME_GAP_S,
    colour,
    draw,
    load_index,
    main,
    problems,
    read_keyframes,
    read_mot,
    runs,
)
from tests.conftest import require_data

CLIPS = sorted(load_index())


def test_index_lists_the_issue_clips() -> None:
    """The four multi-person / issue clips and the UP-Fall clips with bystanders or passers-by."""
    for video in (
        "clips/felix_exercise.avi",
        "clips/mmaction2_demo_skeleton.mp4",
        "clips/stgcn_clean_and_jerk.mp4",
        "clips/stgcn_ta_chi.mp4",
        "upfall/Activity6/Trial1Cam1.mp4",
        "upfall/Activity6/Trial2Cam1.mp4",
    ):
        assert video in CLIPS
    assert any("Cam2" in v for v in CLIPS)


@pytest.mark.parametrize("video", CLIPS)
def test_mot_file_is_consistent(video: str) -> None:
    """Parses, matches its keyframes, boxes inside the frame, ids described, keyframes <= 0.5 s apart,
    one row per person in every frame of their labelled runs, and the clip is the real video."""
    import cv2

    info = load_index()[video]
    assert problems(info) == []
    rows = read_mot(info.mot_path)
    assert rows, "an empty ground truth"
    frames_of: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        frames_of[r.person].append(r.frame)
    for person, spans in runs(read_keyframes(info.keyframes_path)).items():
        expected = sorted(f for span in spans for f in range(span[0].frame, span[-1].frame + 1))
        assert sorted(frames_of[person]) == expected, f"id {person}: rows and keyframe runs differ"
    assert {r.person for r in rows if r.counted} - set(info.distractors), "nobody is counted"
    path = require_data(info.video)
    cap = cv2.VideoCapture(str(path))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == info.frames
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
            info.width,
            info.height,
        )
        assert abs(cap.get(cv2.CAP_PROP_FPS) - info.fps) < 0.01
    finally:
        cap.release()
    assert max(r.frame for r in rows) <= info.frames
    assert MAX_KEYFRAME_GAP_S == 0.5


def test_problems_catches_a_broken_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker is not a rubber stamp: a box outside the frame, a sparse keyframe and a MOT file
    out of date with its keyframes are all reported."""
    import bench.groundtruth as gt

    info = load_index()["clips/mmaction2_demo_skeleton.mp4"]
    keys = info.keyframes_path.read_text().splitlines()
    monkeypatch.setattr(gt, "GT_ROOT", tmp_path)
    keys = [line for line in keys if not line.startswith("9,2,")]  # 1 -> 17: more than 0.5 s apart
    keys.append("5,1,-40,280,890,915,1,in")  # starts left of the frame: clipped, fine
    info_path = tmp_path / "keyframes" / "clips" / "mmaction2_demo_skeleton.csv"
    info_path.parent.mkdir(parents=True)
    info_path.write_text("\n".join(keys) + "\n")
    gt.build(info)
    mot = tmp_path / "mot" / "clips" / "mmaction2_demo_skeleton.txt"
    lines = mot.read_text().splitlines()
    lines[0] = "1,1,655.0,280.0,1500.0,635.0,1,1,1.00"  # runs past the right edge
    mot.write_text("\n".join(lines) + "\n")
    found = "\n".join(gt.problems(info))
    assert "more than 0.5 s apart" in found
    assert "not inside" in found
    assert "differs from its keyframes" in found


def test_draw_on_a_real_clip(tmp_path: Path) -> None:
    """The drawing script puts every labelled person's box on the real frames, one PNG per frame
    and as a contact sheet."""
    import cv2

    require_data("clips", "mmaction2_demo_skeleton.mp4")
    info = load_index()["clips/mmaction2_demo_skeleton.mp4"]
    singles = draw(info.video, tmp_path / "single", frames=[1, 36])
    assert [p.name for p in singles] == [
        "clips_mmaction2_demo_skeleton_00001.png",
        "clips_mmaction2_demo_skeleton_00036.png",
    ]
    rows = [r for r in read_mot(info.mot_path) if r.frame == 36]
    img = cv2.cvtColor(cv2.imread(str(singles[1])), cv2.COLOR_BGR2RGB)
    assert img.shape == (info.height, info.width, 3)
    for r in rows:  # the box's left edge is drawn in the person's colour
        x0, y0, _, y1 = (round(v) for v in r.box)
        edge = img[y0 + 40 : y1 - 40, x0]
        assert np.all(np.abs(edge.astype(int) - colour(r.person)).max(axis=1) < 40)
    sheets = draw(info.video, tmp_path / "sheet", keyframes_only=True, sheet=6, columns=3, tile_width=320)
    assert len(sheets) == -(-len({k.frame for k in read_keyframes(info.keyframes_path)}) // 6)
    assert cv2.imread(str(sheets[0])).shape[1] == 3 * 320


def test_cli_check_and_draw(tmp_path: Path) -> None:
    require_data("clips", "stgcn_ta_chi.mp4")
    assert main(["check"]) == 0
    assert main(["draw", "stgcn_ta_chi", "--out", str(tmp_path), "--frames", "1-3,10", "--sheet", "4"]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 1
