"""service.memory: the server process's malloc set-up (the live soak in
tests/service/test_reliability_live.py checks what it is for: flat idle memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from skeleton.paths import REPO_ROOT

# In a fresh process: four threads each allocate (a thread's first allocation picks its arena)
# and hold their block while glibc's malloc_stats prints one "Arena N:" section per arena.
_PROBE = """
import ctypes, sys, threading
from service.memory import tune_malloc

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
tuned = tune_malloc() if sys.argv[1] == "tune" else None
held = threading.Barrier(5)

def worker():
    block = libc.malloc(1024)
    held.wait()
    held.wait()
    libc.free(block)

threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
held.wait()
libc.malloc_stats()
held.wait()
for t in threads:
    t.join()
print(tuned)
"""


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    """(what tune_malloc returned, arenas in use with four threads allocating)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={
            **{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"},
            "PYTHONPATH": str(REPO_ROOT),
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip(), sum(line.startswith("Arena ") for line in out.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_tune_malloc_gives_every_thread_the_main_arena_unless_the_environment_says() -> None:
    plain = _arenas("plain")
    assert plain[0] == "None" and plain[1] >= 3, plain  # glibc's default: an arena per thread
    assert _arenas("tune") == ("True", 1)
    assert _arenas("tune", MALLOC_ARENA_MAX="2") == ("False", 2)  # the environment wins
