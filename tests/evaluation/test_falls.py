"""``python -m evaluation.falls`` run small: one real UP-Fall fall clip through a real server it starts
(both views) with the shipped model, the table printed and the JSON written with the summary the
docs quote (falls found, false falls, false alarms per hour with the hours, processed share)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.falls import main
from tests.conftest import require_data
from tests.service_helpers import MODEL_ZOO, require_upfall_model


def test_benchmark_command_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = require_upfall_model()
    require_data("upfall", "Activity1", "Trial2Cam1.mp4")
    monkeypatch.setenv("SKELACT_MODELS_DIR", str(MODEL_ZOO))
    monkeypatch.setenv("SKELACT_PROVIDERS", "cpu")
    out = tmp_path / "falls.json"
    args = ["--model", f"{model}:2", "--sets", "falls", "--limit", "1", "--json", str(out)]
    assert main([*args, "--joined", str(tmp_path / "joined")]) == 0
    result = json.loads(out.read_text())
    (summary,) = result["summary"]
    assert summary["model"] == model and summary["trials"] == [2] and not summary["in_sample"]
    runs = result["results"][model]
    assert [(r["recording"], r["view"]) for r in runs] == [
        ("Activity1/Trial2Cam1", "clip"),
        ("Activity1/Trial2Cam1", "replay"),
        ("Activity1/Trial2Cam1", "stream"),
    ]
    clip = summary["views"]["clip"]
    # the clip view does not depend on the machine's load: the fall is found
    assert clip["falls_found"] == "1/1" and clip["fall_recall"] == 1.0 and clip["errors"] == []
    assert clip["frames_processed_share"] == 1.0
    # ... and the clip's label as /recognize decides it is scored against the activity
    # (the shipped model reads this clip right)
    assert runs[0]["truth"] == runs[0]["label"] == "falling forward using hands"
    assert clip["clip_top1"] == 1.0 and clip["wrong_clips"] == []
    assert summary["views"]["replay"]["clip_top1"] is None  # a stream has no clip label
    replay = summary["views"]["replay"]  # every frame, on the recording's clock: the fall is found too
    assert replay["falls_found"] == "1/1" and replay["errors"] == []
    assert replay["frames_processed_share"] == 1.0
    stream = summary["views"]["stream"]
    assert stream["errors"] == [] and 0 < stream["frames_processed_share"] <= 1.0
    assert stream["ordinary_hours"] == 0 and stream["false_alarms_per_hour"] is None  # no daily set
    fall = next(e for e in runs[0]["events"] if e["type"] == "fall")
    assert 0.5 <= fall["fall_time"] <= 6.0 and fall["time"] >= fall["fall_time"] + 1.5  # fall at ~1.2 s
    table = capsys.readouterr().out
    assert f"{model} (trials [2])" in table and "false alarms / hour" in table and "clip top-1" in table
