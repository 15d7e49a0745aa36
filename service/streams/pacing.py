"""A stream's pace (frame interval, solo and single-threaded pose times) and its pose lanes:
what `service.streams.scheduler` decides a frame's pose by."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = [
    "LANES_AFTER_FRAMES",
    "MAX_BUSY_ONE_AT_A_TIME",
    "SOLO_GIVE_UP_RATIO",
    "SOLO_MAX_BACKOFF",
    "SOLO_PROBE_EVERY",
    "Lanes",
    "Pace",
]

# A stream runs its frames one at a time (solo, or on its first lane) while one lane keeps up:
# pose time < this share of the frame interval. Beyond it two single-threaded frames at once (the
# lanes) keep up better, e.g. at 30 fps on two cores. Below it no second lane is used: a second
# frame in pose starts from the people found two frames before (`StreamSession._carry_over`), so
# the skeletons differ from those of one lane, and a few such frames lost falls in the real-pace
# stream of UP-Fall clips posed at 65-80 % of their 18 fps interval (0.7 until 2026-12-03: of 14
# real-pace runs of Activity2/Trial2Cam1 and Activity4/Trial2Cam2 at load ~3, the 6 that missed
# the fall all had 1-18 frames on lane 1; one lane only: 4 of 4 found; docs/falls.md, "Round 6").
# A frame that waits for the one before it costs latency, not frames: the inbox keeps the newest.
MAX_BUSY_ONE_AT_A_TIME = 1.0
# ... and only once this many frames are posed: the first pose calls of a stream include its
# graphs' warm-up and a moving average of a few samples is noise. A second lane used at frames 2-6
# of a stream set its people on another course for the rest of it (UP-Fall Activity2/Trial2Cam1,
# real pace, 8 runs: the 3 with two or three such frames missed the fall; the 5 with at most one
# found it, every frame posed as in the lock-step replay).
LANES_AFTER_FRAMES = 20
# Solo frames are only worth it while faster than single-threaded ones: with other busy processes
# on the cores, XNNPACK's waiting threads spin and a solo frame takes 1.7x a single-threaded one
# (p95 6x). So every this-many frames one runs the other way, to compare; as one probe frame is a
# noisy sample (frames differ by 1.5x in cost), solo ends only when this much slower.
#
# A stream starts single-threaded, on its lane 0 (a pre-built spare): solo is first tried after
# SOLO_PROBE_EVERY frames. A solo call is a gamble with an unbounded downside: with other processes
# on the cores a two-thread call took 0.2-6.9 s against 25-100 ms single-threaded (load 4-8 on two
# cores, 2026-12-03), and a stream that started solo lost its first 3 s (an UP-Fall fall that came
# 1.5 s in was missed, the frames after it dropped). So the first frames never pose solo, and each
# solo probe that loses doubles the wait before the next one (up to 2**SOLO_MAX_BACKOFF rounds).
SOLO_PROBE_EVERY = 50
SOLO_GIVE_UP_RATIO = 1.4
SOLO_MAX_BACKOFF = 5
_SOLO_WEIGHT = 0.1  # of the newest sample in the moving averages
_SINGLE_WEIGHT = 0.25  # single-threaded frames are rare while solo: each counts more


@dataclass
class Pace:
    """A stream's frame interval and decode + pose times (solo and single-threaded), as moving
    averages: whether its next frame should pose solo."""

    interval_s: float | None = None
    solo_s: float | None = None
    single_s: float | None = None
    since_single: int = 0  # solo frames since the last single-threaded one
    since_solo: int = 0  # single-threaded frames since the last solo one
    lost_probes: int = 0  # solo probes in a row that were clearly slower (the next waits longer)
    frames: int = 0  # frames posed
    _last_arrival: float | None = None

    def arrived(self, at: float) -> None:
        if self._last_arrival is not None:
            self.interval_s = _moving_average(self.interval_s, at - self._last_arrival, _SOLO_WEIGHT)
        self._last_arrival = at

    def posed(self, seconds: float, solo: bool) -> None:
        self.frames += 1
        if solo:
            # a probe after single-threaded frames is a fresh sample of what solo costs now
            probe = self.since_solo > 0
            self.solo_s = seconds if probe else _moving_average(self.solo_s, seconds, _SOLO_WEIGHT)
            self.since_single, self.since_solo = self.since_single + 1, 0
            if probe:
                self.lost_probes = self.lost_probes + 1 if self._solo_slower() else 0
        else:
            self.single_s = _moving_average(self.single_s, seconds, _SINGLE_WEIGHT)
            self.since_single, self.since_solo = 0, self.since_solo + 1

    def busy(self) -> bool:
        """Too fast a stream for one frame at a time (`MAX_BUSY_ONE_AT_A_TIME`); False until
        measured over `LANES_AFTER_FRAMES` frames."""
        known = [t for t in (self.solo_s, self.single_s) if t is not None]
        if self.interval_s is None or not known or self.frames < LANES_AFTER_FRAMES:
            return False
        return min(known) >= MAX_BUSY_ONE_AT_A_TIME * self.interval_s

    def wants_solo(self) -> bool:
        """Single-threaded for the first SOLO_PROBE_EVERY frames, then solo while solo frames are
        not clearly slower (SOLO_GIVE_UP_RATIO); single-threaded while too fast a stream for one
        frame at a time. Each way is probed now and then; a lost solo probe doubles the wait for
        the next."""
        if self.busy():
            return False
        if self.solo_s is None or self._solo_slower():
            return self.since_solo >= SOLO_PROBE_EVERY * 2 ** min(self.lost_probes, SOLO_MAX_BACKOFF)
        return self.since_single < SOLO_PROBE_EVERY

    def _solo_slower(self) -> bool:
        solo, single = self.solo_s, self.single_s
        return solo is not None and single is not None and solo >= SOLO_GIVE_UP_RATIO * single


def _moving_average(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else average + weight * (sample - average)


class Lanes:
    """Pose lanes of one stream (lane 0 is the stream's own estimator, the others extra ones)."""

    def __init__(self, count: int) -> None:
        self.free = list(range(count))
        self.freed = asyncio.Event()

    async def take(self, extra: bool) -> int:
        """The lowest free lane; lanes above 0 only when ``extra``."""
        while True:
            usable = [lane for lane in self.free if extra or lane == 0]
            if usable:
                self.free.remove(min(usable))
                return min(usable)
            self.freed.clear()
            await self.freed.wait()

    def give_back(self, lane: int) -> None:
        self.free.append(lane)
        self.freed.set()
