"""The summary of clips outside a model's actions (evaluation.action_sets): sets counted together,
every other model alone; clip labels, people, segment seconds and stream replies."""

from __future__ import annotations

from dataclasses import asdict

from evaluation.action_sets import Row, StreamRow, summarize_outside


def test_outside_clips_are_summarized_per_model_group() -> None:
    rows = [
        Row("a.mp4", "unknown", "unknown", 0.9, 1.0, False, None, "set:one", ["unknown"], 4.0, 0.0, []),
        Row(
            "b.mp4",
            "unknown",
            "walking",
            0.6,
            1.0,
            False,
            "walking",
            "set:two",
            ["walking", "unknown"],
            5.0,
            2.5,
            ["walking 0.0-2.5"],
        ),
        Row(
            "a.mp4",
            "unknown",
            "unknown",
            0.8,
            1.0,
            False,
            None,
            "base",
            ["standing"],
            4.0,
            1.0,
            ["standing 1-2"],
        ),
    ]
    streams = [
        StreamRow("a.mp4", "set:one", 10, 8, 8, {}),
        StreamRow("b.mp4", "set:two", 10, 6, 2, {"walking": 4}),
        StreamRow("a.mp4", "base", 10, 8, 5, {"standing": 3}),
    ]
    lines = summarize_outside(
        {"unknown_clips": [asdict(r) for r in rows], "unknown_streams": [asdict(r) for r in streams]}
    )
    assert lines == [
        "clips outside base' actions: 1 of 1 clip labels unknown, 0 of 1 people; segments: 1.0 of 4.0 s "
        "labelled other than unknown; streams: 5 of 8 labelled (frame, person) replies unknown, the others "
        "{'standing': 3}",
        "clips outside sets' actions: 1 of 2 clip labels unknown, 2 of 3 people; segments: 2.5 of 9.0 s "
        "labelled other than unknown; streams: 10 of 14 labelled (frame, person) replies unknown, the others "
        "{'walking': 4}",
    ]
