"""The server's pose resources: where estimators run, who may run pose, and estimators built ahead.

* Estimators run on the pose executor: threads of this process, or worker processes
  (`perception.pose.workers`, ``SKELACT_POSE_EXECUTOR=process``), one estimator per stream lane
  or clip lane, never shared or reused (its tracking state belongs to one client).
* `PoseSlots`: one slot per pose worker. A single-threaded pose call holds one; a solo stream's
  call, whose model runs on every core (``SKELACT_SOLO_POSE_THREADS``), holds all of them.
  XNNPACK's worker threads spin while they wait, so a multi-threaded call that shares its cores
  with any other pose call runs ~20x slower: every pose call of a stream or a clip takes its slots
  here first.
* Spares: estimators built ahead (``SKELACT_POSE_SPARES``), so a new stream or clip does not wait
  ~0.1-0.5 s for MediaPipe's graph; rebuilt only while no stream is open (a build holds the GIL).
* Solo: a stream may pose solo while it is the server's only pose work (`stream_is_alone`) and no
  other process keeps the cores busy (`service.outside_load`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from perception.pose.estimator import PoseEstimator
from perception.pose.workers import PoseWorkerPool
from service.core.config import Settings
from service.lifecycle import Lifecycle
from service.load import BusyMeter
from service.memory import release_memory
from service.metrics import Metrics
from service.outside_load import OutsideLoad

log = logging.getLogger(__name__)
T = TypeVar("T")


class PoseSlots:
    """Who may run pose now: ``count`` slots, one per pose worker."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self._free = asyncio.Semaphore(count)
        self.waiting = 0  # callers waiting for slots now
        self.meter = BusyMeter(count)  # the pose load: skelact_pose_busy_ratio

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
        self.waiting += 1
        try:
            while taken < count:
                await self._free.acquire()
                taken += 1
                self.meter.add(1)
        except BaseException:
            self.give(taken)
            raise
        finally:
            self.waiting -= 1

    def give(self, count: int = 1) -> None:
        self.meter.add(-count)
        for _ in range(count):
            self._free.release()


class PosePool:
    """Pose estimators of one server: built, handed out, run and closed here."""

    def __init__(self, settings: Settings, metrics: Metrics, lifecycle: Lifecycle, io_pool: Executor) -> None:
        self.settings = settings
        self.metrics = metrics
        self.lifecycle = lifecycle  # open streams: solo and spare rebuilds depend on them
        self.io_pool = io_pool
        s = settings
        # process mode: these threads only wait on the workers' pipes
        threads = s.pose_workers * (2 if s.pose_executor == "process" else 1)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="pose")
        self.workers: PoseWorkerPool | None = None
        self.clips_in_pose = 0  # clips between taking their estimators and finishing their frames
        self._slots: PoseSlots | None = None
        self._spares: dict[int, list[PoseEstimator]] = {}  # by thread count
        self._refill: asyncio.Future[None] | None = None
        self._count_missing_spares()
        self.outside = OutsideLoad()  # other processes on the cores: solo only while they are idle

    @property
    def slots(self) -> PoseSlots:
        """One per pose worker. A stream takes its slots *before* it picks its newest frame, so a
        frame never waits in the executor's queue while newer ones arrive (they replace it)."""
        if self._slots is None:
            self._slots = PoseSlots(self.settings.pose_workers)
        return self._slots

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` on the pose executor (pose calls, and estimators' builds and closes)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    # ----------------------------------------------------------------- who may pose solo

    def stream_is_alone(self) -> bool:
        """One open stream and no clip in pose: that stream's frames may use every pose core
        (``Settings.solo_threads``), one frame at a time, holding every pose slot."""
        return self.lifecycle.streams == 1 and self.clips_in_pose == 0

    @contextlib.asynccontextmanager
    async def clip_in_pose(self) -> AsyncIterator[None]:
        """A clip's pose work: streams stop posing solo from here on (the clip's frames take one
        pose slot each, so none runs beside a solo frame still in pose)."""
        self.clips_in_pose += 1
        self.metrics.clips_in_pose.inc()
        try:
            yield
        finally:
            self.clips_in_pose -= 1
            self.metrics.clips_in_pose.dec()

    # ----------------------------------------------------------------- estimators

    def new_estimator(self, threads: int = 1) -> PoseEstimator:
        """A pose estimator for one stream or clip lane, in this process or in a worker process;
        ``threads`` > 1 only for solo work, which holds every pose slot."""
        spec = self.settings.pose_spec(threads)
        return self.workers.open(spec) if self.workers is not None else spec.create()

    async def take_estimator(self, threads: int = 1) -> PoseEstimator:
        """A never-used estimator (``threads``: see `new_estimator`): a pre-built spare when there
        is one, replaced in the background once no stream is open (`refill_spares`). Estimators
        are not reused: the landmarker's tracking state would carry one client's people into
        another's."""
        spares = self._spares.get(threads)
        estimator = spares.pop() if spares else None
        self._count_missing_spares()
        if estimator is None:
            estimator = await self.run(self.new_estimator, threads)
        self.refill_spares()
        return estimator

    async def close_estimators(self, estimators: list[PoseEstimator]) -> None:
        """Close on the pose executor (after the estimator's last frame: see `_ClosesAfterFrame`)."""
        for estimator in estimators:
            await self.run(estimator.close)

    def _spares_wanted(self) -> dict[int, int]:
        """``pose_spares`` single-threaded estimators, and one for solo work when that is on."""
        s = self.settings
        wanted = {1: s.pose_spares}
        if s.solo_threads > 1 and s.pose_spares:
            wanted[s.solo_threads] = 1
        return wanted

    def _missing_spares(self) -> dict[int, int]:
        """Spares still to build, by thread count."""
        short = {
            threads: count - len(self._spares.get(threads, ()))
            for threads, count in self._spares_wanted().items()
        }
        return {threads: n for threads, n in short.items() if n > 0}

    def _count_missing_spares(self) -> None:
        """Publish how many spares are still to build: memory readings and capacity checks
        should wait for 0 (a refill runs in the background once the last stream closes)."""
        self.metrics.pose_spares_missing.set(sum(self._missing_spares().values()))

    async def wait_for_refill(self) -> None:
        """Let a spare being built finish (one build at most once a stream is open): a stream that
        connects now waits before its hello instead of stalling on its first frames."""
        if self._refill is not None and not self._refill.done():
            await asyncio.wait([self._refill])

    def refill_spares(self) -> None:
        """Build the missing spares, but only while no stream is open: building a MediaPipe graph
        holds the GIL for its whole ~0.12 s, stalling every stream's event loop and replies
        (clips only lose that time once)."""
        if self._refill is not None and not self._refill.done():
            return

        def missing() -> int | None:
            """The thread count of a spare still to build (None: none, or no longer now)."""
            if self.lifecycle.draining or self.lifecycle.streams:
                return None
            return next(iter(self._missing_spares()), None)

        if missing() is None:
            return

        async def refill() -> None:
            loop = asyncio.get_running_loop()
            try:
                while (threads := missing()) is not None:
                    estimator = await loop.run_in_executor(self.io_pool, self.new_estimator, threads)
                    self._spares.setdefault(threads, []).append(estimator)
                    self._count_missing_spares()
                # a graph build frees its scratch memory: hand those pages back too
                await loop.run_in_executor(self.io_pool, release_memory)
            except Exception:  # the next take builds its own estimator and reports the error
                log.exception("building a spare pose estimator failed")

        self._refill = asyncio.ensure_future(refill())

    def warm(self) -> str:
        """Build the pose model bundle and run one frame (in every worker), so requests start fast;
        returns what the readiness report says about pose."""
        s = self.settings
        if s.pose_executor == "process" and self.workers is None:
            self.workers = PoseWorkerPool(s.pose_workers)
        estimators = [self.new_estimator() for _ in range(s.pose_workers if self.workers else 1)]
        try:
            for est in estimators:
                est.estimate(np.zeros((256, 256, 3), np.uint8), 0.0)
            est = estimators[0]
            return (
                f"{est.name} (max {est.max_people} people, {s.pose_workers} {s.pose_executor} "
                f"worker{'s' if s.pose_workers > 1 else ''})"
            )
        finally:
            for est in estimators:
                est.close()

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        for spares in self._spares.values():
            while spares:
                spares.pop().close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.workers is not None:
            self.workers.close()
