"""service.lifecycle: the server process's malloc settings (the live soak in
tests/test_reliability_live.py checks what they are for: flat idle memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skeleton.paths import REPO_ROOT

# In a fresh process: free a 20 MB block (glibc then raises its mmap threshold to 20 MB unless it
# is fixed), then count the mmap'ed blocks a 17 MB allocation adds: 1 above a fixed 16 MB
# threshold, 0 when the heap serves it.
_PROBE = """
import ctypes, sys
from service.lifecycle import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
tuned = tune_malloc() if sys.argv[1] == "tune" else None
libc.free(libc.malloc(20 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(17 << 20)
print(tuned, libc.mallinfo2().hblks - before)
libc.free(block)
"""


def _probe(mode: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_tune_malloc_fixes_the_mmap_threshold_unless_the_environment_sets_it() -> None:
    assert _probe("plain") == "None 0"  # glibc's default: the freed block moved the threshold
    assert _probe("tune") == "True 1"
    env = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20)}
    assert _probe("tune", **env) == "True 0"  # the environment's threshold wins; arenas still capped
    env["MALLOC_ARENA_MAX"] = "4"
    assert _probe("tune", **env) == "False 0"  # both set by the environment: nothing to do
