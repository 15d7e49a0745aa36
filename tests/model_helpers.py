"""Real-data helpers for the model/training/export tests (UTD-MHAD files, the UP-Fall skeleton cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_data

UPFALL_CACHE = Path(os.environ.get("SKELACT_UPFALL_CACHE", REPO_ROOT / "cache" / "skeletons" / "upfall"))


def utd_file(action: int, subject: int, trial: int) -> Path:
    return require_data("utd_mhad", "skeleton", f"a{action}_s{subject}_t{trial}_skeleton.mat")


def require_cache(*relative: str) -> Path:
    """A file of the UP-Fall MediaPipe skeleton cache (``python -m training.extract``); skipped when
    absent locally, a failure in CI (CI=true)."""
    path = UPFALL_CACHE.joinpath(*relative)
    if not path.exists():
        message = f"UP-Fall skeleton cache missing: {path} (run python -m training.extract)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
