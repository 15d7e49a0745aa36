"""How busy a replica is: its pose slots over the last half minute and its clips running and
waiting. `/metrics` exports both (the autoscaler reads them) and `/health/ready` reads the streams.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

__all__ = ["BusyMeter", "ClipAdmission"]


class BusyMeter:
    """Share of ``capacity`` units held over the last ``window_s`` seconds (0..1), e.g. pose slots
    held by pose calls: 1.0 means every pose core ran pose the whole time.

    Held time is summed into one-second buckets as units are taken and given back, so reading
    costs at most ``window_s`` additions, whatever the rate of changes.
    """

    def __init__(
        self, capacity: int, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = max(1, capacity)
        self.window_s = window_s
        self._now = clock
        self.held = 0
        self._t = self._t0 = self._now()
        self._buckets: deque[list[float]] = deque()  # [second, held unit-seconds]

    def add(self, units: int) -> None:
        """``units`` more held (negative: given back), from now on."""
        self._accrue(self._now())
        self.held = max(0, self.held + units)

    def ratio(self) -> float:
        now = self._now()
        self._accrue(now)
        start = max(math.floor(now - self.window_s), self._t0)  # whole buckets from here to now
        busy = sum(v for s, v in self._buckets if s >= math.floor(start))
        return min(1.0, busy / (max(now - start, 1e-9) * self.capacity))

    def _accrue(self, now: float) -> None:
        if now - self._t > self.window_s:  # idle for longer than the window: nothing to carry over
            self._buckets.clear()
            self._t = now - self.window_s
        t = self._t
        while t < now:
            second = math.floor(t)
            end = min(now, second + 1.0)
            if self.held:
                if not self._buckets or self._buckets[-1][0] != second:
                    self._buckets.append([second, 0.0])
                self._buckets[-1][1] += self.held * (end - t)
            t = end
        self._t = now
        horizon = math.floor(now - self.window_s) - 1
        while self._buckets and self._buckets[0][0] < horizon:
            self._buckets.popleft()


class ClipAdmission:
    """``SKELACT_MAX_CONCURRENT_CLIPS`` clips run at once (``async with``); more wait here.
    ``running`` and ``waiting`` are the gauges ``skelact_active_clips`` and ``skelact_queued_clips``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self._free: asyncio.Semaphore | None = None

    @property
    def pending(self) -> int:
        return self.running + self.waiting

    async def __aenter__(self) -> None:
        if self._free is None:
            self._free = asyncio.Semaphore(self.limit)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.running -= 1
        assert self._free is not None
        self._free.release()
