"""Real-data helpers for the model/training/export tests (UTD-MHAD files, the UP-Fall skeleton cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_data

UPFALL_CACHE = Path(os.environ.get("SKELACT_UPFALL_CACHE", REPO_ROOT / "cache" / "skeletons" / "upfall"))


def utd_file(action: int, subject: int, trial: int) -> Path:
    return require_data("utd_mhad", "skeleton", f"a{action}_s{subject}_t{trial}_skeleton.mat")


# The clips the tests read: every activity of trial 2 seen by the frontal camera (the export test's
# end-to-end check) and three trial-1 clips. Extracting all 44 would take ~20 min of a 2-core CI run.
TEST_CLIP_PATTERNS = ("Activity*/Trial2Cam1.mp4", "Activity[137]/Trial1Cam1.mp4")


def require_cache(*relative: str) -> Path:
    """A file of the UP-Fall MediaPipe skeleton cache; a fresh clone has none, so the test clips are
    extracted on demand (once, one video per core) with the real CLI (``python -m training.extract``,
    the service's pose code)."""
    path = UPFALL_CACHE.joinpath(*relative)
    if not path.exists():
        videos = require_data("upfall")
        patterns = [arg for pattern in TEST_CLIP_PATTERNS for arg in ("--pattern", pattern)]
        subprocess.run(
            [sys.executable, "-m", "training.extract", "--videos", str(videos), "--out", str(UPFALL_CACHE),
             "--max-people", "2", "--jobs", str(min(4, os.cpu_count() or 1)), *patterns],
            cwd=REPO_ROOT, check=True,
        )
    if not path.exists():
        pytest.fail(f"UP-Fall skeleton cache missing after extraction: {path} (is it in TEST_CLIP_PATTERNS?)")
    return path
