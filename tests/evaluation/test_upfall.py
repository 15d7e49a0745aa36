"""HTTP vs offline on a few real UP-Fall clips: the endpoint reproduces the offline evaluation.

The full 44-clip run is ``python -m evaluation.upfall --via both`` (numbers in docs/api.md). Uses
the shipped UP-Fall model when model_zoo/ has one, else a generated 11-class model: either way
both paths must compute the same windows and scores (labels: tests/service/api/test_api_upfall.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.upfall import ClipCase, evaluate, track_window_ends
from service.buffer import TrackBuffer
from service.core.config import Settings
from skeleton.manifest import load_manifest
from skeleton.types import BoundingBox, PersonPose
from tests.conftest import require_data
from tests.service_helpers import MODEL_ZOO, trim_video, upfall_model_name, write_linear_model

# (clip, first frame): picking up an object; a fall with a seated bystander in view
CLIPS = (("Activity9/Trial1Cam1", 20), ("Activity1/Trial1Cam2", 40))


def _trimmed_cases(data: Path, out: Path, labels: list[str]) -> list[ClipCase]:
    """4 s of each of CLIPS, as evaluation cases."""
    cases = []
    for c, start in CLIPS:
        a = int(c.split("/")[0][len("Activity") :])
        clip = trim_video(data / f"{c}.mp4", out / f"a{a}.mp4", start=start, frames=72)
        cases.append(ClipCase(a, 1, int(c[-1]), clip, labels[a - 1]))
    return cases


def test_window_protocol_matches_the_buffer(tmp_path: Path) -> None:
    """The offline window ends are the ones TrackBuffer emits incrementally (gaps included)."""
    spec = load_manifest(write_linear_model(tmp_path / "m", ["a", "b"], length=20, fps=9, stride=3)).input
    buf = TrackBuffer(1, spec, keep_all=True)
    times = np.arange(0.4, 9.0, 1 / 18)
    seen = np.ones(len(times), bool)
    seen[50:70] = False  # missed for a second
    seen[-5:] = False  # gone before the clip ends
    pose = PersonPose(
        np.ones((33, 3), np.float32),
        np.ones((33, 3), np.float32),
        np.ones(33, np.float32),
        BoundingBox(0, 0, 1, 1),
    )
    ends: list[float] = []
    for t, s in zip(times, seen, strict=True):
        buf.push(float(t), pose if s else None, 480)
        ends += buf.due()
    np.testing.assert_array_equal(ends, track_window_ends(times, seen, 19 / 9, 3 / 9))
    short = np.zeros(len(times), bool)
    short[3:10] = True
    assert track_window_ends(times, short, 19 / 9, 3 / 9).tolist() == [times[9]]


@pytest.mark.slow
def test_http_equals_offline_on_upfall_clips(tmp_path: Path) -> None:
    """Two real UP-Fall clips (4 s of each) through the HTTP endpoint and offline: same scores."""
    data = require_data("upfall")
    model = upfall_model_name()
    if model is not None:
        settings = Settings(models_dir=MODEL_ZOO, providers=["cpu"])
        labels = load_manifest(MODEL_ZOO / model).labels
    else:  # no trained UP-Fall model yet: the comparison still holds score for score
        model = "upfall-linear"
        labels = [f"activity{i}" for i in range(1, 12)]
        write_linear_model(tmp_path / "zoo" / model, labels, length=36, fps=18, stride=9)
        settings = Settings(models_dir=tmp_path / "zoo", providers=["cpu"])
    report = evaluate(settings, model, _trimmed_cases(data, tmp_path, labels), via="both", jobs=2)
    assert report.agreement == 1.0, report.rows
    assert report.max_prob_diff is not None and report.max_prob_diff < 1e-3  # responses round to 4 digits
    assert report.http_accuracy == report.offline_accuracy


@pytest.mark.slow
def test_online_view_counts_fall_alarms_per_clip(tmp_path: Path) -> None:
    """``--via online``: every online track of a clip is scored; a fall clip raises an alarm and a
    clip of someone picking up an object does not (shipped UP-Fall model, 4 s of each clip)."""
    data = require_data("upfall")
    model = upfall_model_name()
    assert model is not None, "the shipped UP-Fall model is part of the repository"
    settings = Settings(models_dir=MODEL_ZOO, providers=["cpu"], max_people=2)
    labels = load_manifest(MODEL_ZOO / model).labels
    report = evaluate(settings, model, _trimmed_cases(data, tmp_path, labels), via="online", jobs=2)
    picking, fall = report.rows
    assert fall.online_tracks is not None and fall.online_tracks >= 2  # the seated bystander too
    assert fall.online_fall_peak is not None and picking.online_fall_peak is not None
    assert fall.online_fall_peak >= 0.6 > picking.online_fall_peak
    assert (report.online_alarms_on_falls, report.online_alarms_on_others) == ("1/1", "0/1")
