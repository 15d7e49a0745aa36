"""Pose slots: who may run pose, and on how many cores.

One slot per pose worker. A single-threaded pose call holds one; a call whose model runs on every
core (a solo stream's estimator, ``SKELACT_SOLO_POSE_THREADS``) holds all of them.
XNNPACK's worker threads spin while they wait, so a multi-threaded call that shares its cores
with any other pose call runs ~20x slower (service.pose.TasksPoseEstimator): every pose call of
a stream or a clip takes its slots here first.
"""

from __future__ import annotations

import asyncio


class PoseSlots:
    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self._free = asyncio.Semaphore(count)

    @property
    def free(self) -> int:
        return self._free._value

    async def take(self, count: int = 1) -> None:
        """``count`` slots, waiting for them one by one; none held if cancelled. Only solo work
        takes more than one, and only one solo caller exists at a time, so no two wait on each
        other."""
        if not 1 <= count <= self.count:
            raise ValueError(f"take 1..{self.count} slots, not {count}")
        taken = 0
        try:
            while taken < count:
                await self._free.acquire()
                taken += 1
        except BaseException:
            self.give(taken)
            raise

    def give(self, count: int = 1) -> None:
        for _ in range(count):
            self._free.release()
