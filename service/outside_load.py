"""Cores kept busy by other processes: whether a stream may pose solo.

A solo pose call runs XNNPACK on every pose core, and its threads spin while they wait for each
other: with any other process on those cores one call took 0.2-6.9 s against 25-100 ms
single-threaded (2 cores, load 4-9, 2026-12-03), and a single solo probe blacked a real-pace
stream out for 1.5-4.3 s (an UP-Fall fall missed). So solo is only tried while the machine's busy
time, less this process's own, stays under ``SOLO_MAX_OUTSIDE_CORES`` cores.

Linux only (``/proc/stat``, the machine's CPU time, and ``os.times``, this process's): elsewhere
the outside load is unknown and solo is not tried.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["SOLO_MAX_OUTSIDE_CORES", "OutsideLoad", "machine_busy_seconds"]

# A busy loop of another process on one core is 1.0; a shell or a log shipper now and then is
# ~0.01-0.05. Half a core is well clear of both.
SOLO_MAX_OUTSIDE_CORES = 0.5
_PROC_STAT = Path("/proc/stat")


def machine_busy_seconds(stat: Path = _PROC_STAT) -> float | None:
    """CPU seconds every core of the machine spent busy since boot (all but idle and iowait),
    or None where ``/proc/stat`` cannot be read."""
    try:
        with stat.open() as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already counted in user time
    busy = sum(ticks[:8]) - idle
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class OutsideLoad:
    """Cores busy with other processes' work, averaged over ``every_s``-``5 * every_s`` seconds,
    sampled when read (one small file read a call). A reading older than that is not trusted: the
    next ``every_s`` are measured first (None meanwhile)."""

    def __init__(
        self,
        every_s: float = 1.0,
        busy: Callable[[], float | None] = machine_busy_seconds,
        own: Callable[[], float] = _own_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self._busy, self._own, self._clock = busy, own, clock
        self._last: tuple[float, float, float] | None = None  # (wall, machine busy, own)
        self.cores: float | None = None  # None: not measured yet (or not on Linux)
        self.sample()

    def sample(self) -> float | None:
        """The outside load now (a new reading once ``every_s`` passed since the last; the files
        are read only then, not on every frame that asks)."""
        wall, last = self._clock(), self._last
        if last is not None and 0 <= wall - last[0] < self.every_s:
            return self.cores
        busy, own = self._busy(), self._own()
        if busy is None:
            return None
        if last is None or wall - last[0] > 5 * self.every_s:  # none yet, or an old one: start again
            self._last, self.cores = (wall, busy, own), None
        elif wall - last[0] >= self.every_s:
            self.cores = max(0.0, ((busy - last[1]) - (own - last[2])) / (wall - last[0]))
            self._last = (wall, busy, own)
        return self.cores

    def allows_solo(self) -> bool:
        """Whether the other processes leave the cores free enough for a solo call."""
        cores = self.sample()
        return cores is not None and cores < SOLO_MAX_OUTSIDE_CORES
