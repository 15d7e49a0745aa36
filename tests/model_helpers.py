"""Real-data helpers for the model/training/export tests (UTD-MHAD files, the UP-Fall skeleton cache)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import REPO_ROOT, data_root, require_data

UPFALL_CACHE = Path(os.environ.get("SKELACT_UPFALL_CACHE", REPO_ROOT / "cache" / "skeletons" / "upfall"))


def utd_file(action: int, subject: int, trial: int) -> Path:
    return require_data("utd_mhad", "skeleton", f"a{action}_s{subject}_t{trial}_skeleton.mat")


# The clips the tests read: trial 2 seen by the frontal camera (the export test's end-to-end check)
# for the five falls and the four daily activities nearest to one (walking, picking something up,
# jumping, lying down), and two trial-1 falls. Standing and sitting (~45 s each) are left out:
# extraction is the suite's largest CPU cost (all 44 clips would take ~20 min of a 2-core CI run).
TEST_TRIAL2_ACTIVITIES = (1, 2, 3, 4, 5, 6, 9, 10, 11)
TEST_CLIP_PATTERNS = (*(f"Activity{a}/Trial2Cam1.mp4" for a in TEST_TRIAL2_ACTIVITIES),
                      "Activity1/Trial1Cam1.mp4", "Activity3/Trial1Cam1.mp4")


def _extract_command(videos: Path, jobs: int) -> list[str]:
    patterns = [arg for pattern in TEST_CLIP_PATTERNS for arg in ("--pattern", pattern)]
    return [sys.executable, "-m", "training.extract", "--videos", str(videos), "--out", str(UPFALL_CACHE),
            "--max-people", "2", "--jobs", str(jobs), *patterns]


def _jobs() -> int:
    """One video per core: the extraction and the tests share the cores, none of them idles."""
    return min(4, os.cpu_count() or 1)


def _lock_file() -> IO[str]:
    UPFALL_CACHE.mkdir(parents=True, exist_ok=True)
    return (UPFALL_CACHE / ".extract.lock").open("w")


def _cache_complete() -> bool:
    return all(UPFALL_CACHE.joinpath(p).with_suffix(".npz").exists() for p in TEST_CLIP_PATTERNS)


def start_cache_extraction() -> subprocess.Popen[bytes] | None:
    """Start extracting the missing test clips in the background (once collection is done), so the
    tests that read them, scheduled last (conftest), find them ready instead of waiting for all of
    it. The child (its own process group, with its pool workers) holds the extraction lock until it
    exits; ``require_cache`` waits on that lock."""
    videos = data_root() / "upfall"
    if _cache_complete() or not videos.is_dir():
        return None
    with _lock_file() as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another session is extracting: require_cache waits for it
            return None
        with (UPFALL_CACHE / "extract.log").open("wb") as log:
            return subprocess.Popen(_extract_command(videos, _jobs()), cwd=REPO_ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(lock.fileno(),),
                                    start_new_session=True)


def stop_cache_extraction(proc: subprocess.Popen[bytes]) -> None:
    """End a background extraction still running (its finished clips stay; ``require_cache``
    extracts the rest if a test still needs them)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def require_cache(*relative: str) -> Path:
    """A file of the UP-Fall MediaPipe skeleton cache; a fresh clone has none, so the test clips are
    extracted with the real CLI (``python -m training.extract``, the service's pose code): started
    in the background once collection is done, finished here (one video per core) if needed."""
    path = UPFALL_CACHE.joinpath(*relative)
    if not path.exists():
        videos = require_data("upfall")
        with _lock_file() as lock:  # one extraction at a time (background, other xdist workers)
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():  # the CLI skips clips already extracted
                subprocess.run(_extract_command(videos, _jobs()), cwd=REPO_ROOT, check=True)
    if not path.exists():
        pytest.fail(f"UP-Fall skeleton cache missing after extraction: {path} (is it in TEST_CLIP_PATTERNS?)")
    return path
