"""A label is never dated before its person was seen (issue 18): a track's first window reaches
back a whole window length, which can be before the track's first frame (a person who appears
late in a clip, whose only window ends at their last sighting)."""

from __future__ import annotations

import numpy as np

from service.smoothing import SmoothingConfig, timeline


def test_first_segment_starts_when_the_person_was_first_seen() -> None:
    labels = ["a", "b", "c"]
    ends = np.array([38.5, 39.0])
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    # felix_exercise.avi before issue 18: a segment from 37.26 s for a man first seen at 37.70 s
    dated = timeline(labels, SmoothingConfig(), ends, probs, 2.61, 39.2, first_seen=37.70)
    assert [(s.label, s.start) for s in dated] == [("a", 37.70)]
    # without the first sighting it would reach a whole window back from the first window's end
    assert timeline(labels, SmoothingConfig(), ends, probs, 2.61, 39.2)[0].start == 38.5 - 2.61
    # a track seen before its first window's start keeps the window's start
    assert (
        timeline(labels, SmoothingConfig(), ends, probs, 2.61, 39.2, first_seen=30.0)[0].start == 38.5 - 2.61
    )
