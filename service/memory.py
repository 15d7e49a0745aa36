"""The server process's memory: one malloc arena, and freed heap pages handed back to the OS.

Both are glibc calls (no-ops elsewhere); docs/security.md, "Memory", has the measurements.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

__all__ = ["release_memory", "tune_malloc"]

_M_ARENA_MAX = -8  # glibc mallopt parameter


def tune_malloc(arenas: int = 1) -> bool:
    """Give every thread glibc's main malloc arena (as ``MALLOC_ARENA_MAX=1`` would), unless the
    environment sets ``MALLOC_ARENA_MAX``. Call it before threads start; a no-op without glibc.

    Pose, I/O and ONNX Runtime threads each get an arena by default (8 per core); freed frames
    and estimator buffers then stay spread over them and resident memory wandered between 800 and
    1050 MB over a 600-stream soak. ``malloc_trim`` also cannot shrink the top of a thread's arena,
    so even with two arenas the idle server kept a different amount of freed memory at every
    reading (up to ~60 MB). With one, what `release_memory` frees is gone: idle readings stay
    within 10-15 MB of each other, and decode + pose is as fast (docs/security.md, "Memory").
    """
    libc = _libc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_memory() -> bool:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    A stream frees a whole MediaPipe graph when it closes; without this, glibc keeps those pages
    and the server's resident memory climbs with every connect/disconnect (measured: 370-510 MB
    vs 190-220 MB for 400 estimator lifecycles on two threads). Blocking for a few ms: run it off
    the event loop.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None
