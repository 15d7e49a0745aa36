"""service/load.py: the pose busy ratio over a sliding window (driven by a fake clock) and the
clip admission counts that /metrics exports as skelact_active_clips and skelact_queued_clips."""

from __future__ import annotations

import asyncio

import pytest

from service.load import BusyMeter, ClipAdmission


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_busy_ratio_over_the_window() -> None:
    clock = Clock()
    meter = BusyMeter(capacity=2, window_s=30.0, clock=clock)
    assert meter.ratio() == 0.0
    meter.add(1)  # one of two slots held for 10 s
    clock.t += 10
    assert meter.ratio() == pytest.approx(0.5)
    meter.add(1)  # both for 10 s more: (10 + 20) / (20 * 2)
    clock.t += 10
    assert meter.ratio() == pytest.approx(0.75)
    meter.add(-2)
    clock.t += 10  # 30 s since the start: 30 slot-seconds of 60
    assert meter.ratio() == pytest.approx(0.5, abs=0.02)
    clock.t += 40  # the busy time has left the window
    assert meter.ratio() == 0.0
    for _ in range(100):  # many short calls: 40 % of one slot
        meter.add(1)
        clock.t += 0.2
        meter.add(-1)
        clock.t += 0.3
    assert meter.ratio() == pytest.approx(0.2, abs=0.02)
    meter.add(2)
    clock.t += 3600  # held through a long gap: full, whatever the gap
    assert meter.ratio() == pytest.approx(1.0)


def test_clip_admission_counts_running_and_waiting() -> None:
    async def scenario() -> list[tuple[int, int]]:
        admission = ClipAdmission(limit=1)
        release = asyncio.Event()
        seen = []

        async def clip() -> None:
            async with admission:
                await release.wait()

        tasks = [asyncio.create_task(clip()) for _ in range(3)]
        await asyncio.sleep(0.01)
        seen.append((admission.running, admission.waiting))
        tasks[2].cancel()  # a waiting client hangs up
        await asyncio.sleep(0.01)
        seen.append((admission.running, admission.waiting))
        release.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        seen.append((admission.running, admission.waiting))
        return seen

    assert asyncio.run(scenario()) == [(1, 2), (1, 1), (0, 0)]
