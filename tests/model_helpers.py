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


def require_cache(*relative: str) -> Path:
    """A file of the UP-Fall MediaPipe skeleton cache; a fresh clone has none, so the missing clip is
    extracted on demand (all clips, once) with the real CLI (``python -m training.extract``, the
    service's pose code)."""
    path = UPFALL_CACHE.joinpath(*relative)
    if not path.exists():
        videos = require_data("upfall")
        # One resumable run over all 44 clips (several tests need the whole set).
        subprocess.run(
            [sys.executable, "-m", "training.extract", "--videos", str(videos), "--out", str(UPFALL_CACHE),
             "--max-people", "2"],
            cwd=REPO_ROOT, check=True,
        )
    if not path.exists():
        pytest.fail(f"UP-Fall skeleton cache missing after extraction: {path}")
    return path
