"""``python -m bench.action_sets`` runs small against the real server and reports every cost it names
(the figures themselves come from the lead's quiet run, not from a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_action_sets_bench_small(tmp_path: Path) -> None:
    from bench.action_sets import main

    require_data("upfall")
    out = tmp_path / "bench.json"
    args = ["--labels", "2", "--examples", "1", "--calls", "1", "--seconds", "2.5", "--out", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert [(row["labels"], row["examples_per_label"]) for row in r["rows"]] == [(2, 1)]
    row = r["rows"][0]
    assert row["windows_per_example"] >= 1 and row["add_example_ms"] > 0 and row["add_example_video_ms"] > 0
    assert row["classify_ms_per_window"] > 0 and row["recognize_json_ms"] > 0 and row["check_ms"] > 0
