"""Process-wide service state: settings, models, worker pools, metrics, readiness.

Built by the app's lifespan (and by the offline CLI, which runs the same pipeline without HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.errors import ServiceError
from service.lifecycle import Lifecycle, release_memory
from service.metrics import Metrics
from service.pipeline import PoseTrackStage
from service.pose import PoseEstimator, pose_estimator_for
from service.pose_slots import PoseSlots
from service.pose_workers import PoseWorkerPool
from service.registry import ModelRegistry
from service.settings import Settings

log = logging.getLogger(__name__)


class ResultStore:
    """Annotated videos kept for download (the newest ``keep``; older ones are deleted)."""

    def __init__(self, root: Path | None, keep: int) -> None:
        self._own = root is None
        self.root = Path(tempfile.mkdtemp(prefix="skelact-results-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._items: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, suffix: str) -> tuple[str, Path]:
        rid = uuid.uuid4().hex
        path = self.root / f"{rid}{suffix}"
        with self._lock:
            self._items[rid] = path
            while len(self._items) > self.keep:
                _, old = self._items.popitem(last=False)
                old.unlink(missing_ok=True)
        return rid, path

    def get(self, rid: str) -> Path:
        with self._lock:
            path = self._items.get(rid)
        if path is None or not path.is_file():
            raise ServiceError(
                404,
                "result_not_found",
                f"no result {rid!r}",
                f"results are kept for the last {self.keep} requests; ask again with overlay=true",
            )
        return path

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    registry: ModelRegistry = field(init=False)
    pose_pool: ThreadPoolExecutor = field(init=False)
    io_pool: ThreadPoolExecutor = field(init=False)
    results: ResultStore = field(init=False)
    ready: bool = False
    starting: bool = True
    pose_info: str = ""
    pose_error: str = ""
    warnings: list[str] = field(default_factory=list)
    streams: int = 0
    started_at: float = field(default_factory=time.time)
    pose_procs: PoseWorkerPool | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # open streams, draining on shutdown
    _ready_event: asyncio.Event | None = None
    _clip_slots: asyncio.Semaphore | None = None
    _pose_slots: PoseSlots | None = None
    clips_in_pose: int = 0  # clips between taking their estimators and finishing their frames
    _spare_stages: dict[int, list[PoseTrackStage]] = field(default_factory=dict)  # by thread count
    _refill: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.registry = ModelRegistry(s, self.metrics)
        # process mode: these threads only wait on the workers' pipes
        threads = s.pose_workers * (2 if s.pose_executor == "process" else 1)
        self.pose_pool = ThreadPoolExecutor(threads, thread_name_prefix="pose")
        self.io_pool = ThreadPoolExecutor(max(4, s.max_concurrent_clips * 2), thread_name_prefix="io")
        self.results = ResultStore(s.results_dir, s.results_keep)
        self._count_missing_spares()

    @property
    def clip_slots(self) -> asyncio.Semaphore:
        if self._clip_slots is None:
            self._clip_slots = asyncio.Semaphore(self.settings.max_concurrent_clips)
        return self._clip_slots

    @property
    def pose_slots(self) -> PoseSlots:
        """One per pose worker (service.pose_slots). A stream takes its slots *before* it picks its
        newest frame, so a frame never waits in the executor's queue while newer ones arrive
        (they replace it instead)."""
        if self._pose_slots is None:
            self._pose_slots = PoseSlots(self.settings.pose_workers)
        return self._pose_slots

    def stream_is_alone(self) -> bool:
        """One open stream and no clip in pose: that stream's frames may use every pose core
        (``Settings.solo_threads``), one frame at a time, holding every pose slot."""
        return self.streams == 1 and self.clips_in_pose == 0

    @contextlib.asynccontextmanager
    async def clip_in_pose(self) -> AsyncIterator[None]:
        """A clip's pose work: streams stop posing solo from here on (the clip's frames take one
        pose slot each, so none runs beside a solo frame still in pose)."""
        self.clips_in_pose += 1
        try:
            yield
        finally:
            self.clips_in_pose -= 1

    @property
    def ready_event(self) -> asyncio.Event:
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        return self._ready_event

    def new_estimator(self, threads: int = 1) -> PoseEstimator:
        """A pose estimator for one stream or clip, in this process or in a worker process;
        ``threads`` > 1 only for solo work, which holds every pose slot (service.pose_slots)."""
        s = self.settings
        if self.pose_procs is not None:
            return self.pose_procs.open(s.pose_kind, s.max_people, s.pose_options(threads))
        return pose_estimator_for(s, threads)

    def new_pose_stage(self, threads: int = 1) -> PoseTrackStage:
        return PoseTrackStage(self.settings, self.new_estimator(threads))

    def _spares_wanted(self) -> dict[int, int]:
        """``pose_spares`` single-threaded stages, and one for solo work when that is on."""
        s = self.settings
        wanted = {1: s.pose_spares}
        if s.solo_threads > 1 and s.pose_spares:
            wanted[s.solo_threads] = 1
        return wanted

    def _missing_spares(self) -> dict[int, int]:
        """Spare stages still to build, by thread count."""
        short = {
            threads: count - len(self._spare_stages.get(threads, ()))
            for threads, count in self._spares_wanted().items()
        }
        return {threads: n for threads, n in short.items() if n > 0}

    def _count_missing_spares(self) -> None:
        """Publish how many spares are still to build: memory readings and capacity checks
        should wait for 0 (a refill runs in the background once the last stream closes)."""
        self.metrics.pose_spares_missing.set(sum(self._missing_spares().values()))

    async def take_pose_stage(self, threads: int = 1) -> PoseTrackStage:
        """A never-used pose stage for one stream or clip (``threads``: see `new_estimator`): a
        pre-built spare when there is one (starting a MediaPipe graph takes ~0.1-0.5 s), replaced
        in the background once no stream is open (`refill_spares`). Stages are not reused: the
        landmarker's tracking state would carry one client's people into another's."""
        spares = self._spare_stages.get(threads)
        stage = spares.pop() if spares else None
        self._count_missing_spares()
        if stage is None:
            loop = asyncio.get_running_loop()
            stage = await loop.run_in_executor(self.pose_pool, self.new_pose_stage, threads)
        self.refill_spares()
        return stage

    async def wait_for_refill(self) -> None:
        """Let a spare being built finish (one build at most once a stream is open): a stream that
        connects now waits before its hello instead of stalling on its first frames."""
        if self._refill is not None and not self._refill.done():
            await asyncio.wait([self._refill])

    def refill_spares(self) -> None:
        """Build the missing spare stages, but only while no stream is open: building a MediaPipe
        graph holds the GIL for its whole ~0.12 s, stalling every stream's event loop and replies
        (clips only lose that time once)."""
        if self._refill is not None and not self._refill.done():
            return

        def missing() -> int | None:
            """The thread count of a spare still to build (None: none, or no longer now)."""
            if self.lifecycle.draining or self.streams:
                return None
            return next(iter(self._missing_spares()), None)

        if missing() is None:
            return

        async def refill() -> None:
            loop = asyncio.get_running_loop()
            try:
                while (threads := missing()) is not None:
                    stage = await loop.run_in_executor(self.io_pool, self.new_pose_stage, threads)
                    self._spare_stages.setdefault(threads, []).append(stage)
                    self._count_missing_spares()
                # a graph build frees its scratch memory: hand those pages back too
                await loop.run_in_executor(self.io_pool, release_memory)
            except Exception:  # the next take builds its own stage and reports the error
                log.exception("building a spare pose estimator failed")

        self._refill = asyncio.ensure_future(refill())

    def warm_pose(self) -> str:
        """Build the pose model bundle and run one frame (in every worker), so requests start fast."""
        s = self.settings
        if s.pose_executor == "process" and self.pose_procs is None:
            self.pose_procs = PoseWorkerPool(s.pose_workers)
        ests = [self.new_estimator() for _ in range(s.pose_workers if self.pose_procs else 1)]
        try:
            for est in ests:
                est.estimate(np.zeros((256, 256, 3), np.uint8), 0.0)
            est = ests[0]
            return (
                f"{est.name} (max {est.max_people} people, {s.pose_workers} {s.pose_executor} "
                f"worker{'s' if s.pose_workers > 1 else ''})"
            )
        finally:
            for est in ests:
                est.close()

    async def start(self) -> None:
        """Load + warm up models and pose off the event loop; then mark ready."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.io_pool, self.registry.load_all)
            try:
                self.pose_info = await loop.run_in_executor(self.pose_pool, self.warm_pose)
            except Exception as exc:
                log.exception("pose estimator failed to start")
                self.pose_error = f"{type(exc).__name__}: {exc}"
            for m in self.registry.models.values():
                m.batcher.start()
            if not self.pose_error:
                self.refill_spares()
                await self.wait_for_refill()  # ready with the spares built: a build later stalls streams
            self.warnings = self._warnings()
            strict_failure = self.settings.strict_models and bool(self.registry.failed)
            self.ready = bool(self.registry.models) and not self.pose_error and not strict_failure
        finally:
            self.starting = False
            self.ready_event.set()
        for w in self.warnings:
            log.warning("%s", w)
        if not self.ready:
            log.error("start-up failed: %s", self.not_ready_reason())

    def _warnings(self) -> list[str]:
        out = []
        s = self.settings
        for m in self.registry.models.values():
            if m.runtime.gpu_fell_back:
                out.append(
                    f"model {m.name}: a GPU provider was asked for (SKELACT_PROVIDERS="
                    f"{','.join(s.providers)}) but it runs on CPU; available: "
                    f"{m.runtime.choice.available}. Install the CUDA/cuDNN runtime or set "
                    f"SKELACT_PROVIDERS=cpu to silence this"
                )
        for name, why in self.registry.failed.items():
            out.append(f"model {name} not loaded: {why}")
        if not self.registry.models and not self.registry.failed:
            out.append(
                f"no models under {s.models_dir}: export one with `python -m export` "
                f"or point SKELACT_MODELS_DIR at a model zoo"
            )
        return out

    def not_ready_reason(self) -> str:
        if self.starting:
            return "loading and warming up models"
        if self.lifecycle.draining:
            return "shutting down"
        if self.settings.strict_models and self.registry.failed:
            broken = "; ".join(f"{n}: {why}" for n, why in sorted(self.registry.failed.items()))
            return (
                f"model(s) failed to load: {broken}. Fix or remove them (or list the good ones in "
                "SKELACT_MODELS); SKELACT_STRICT_MODELS=false serves the others"
            )
        if self.pose_error:
            return f"pose estimator failed: {self.pose_error}"
        if not self.registry.models:
            return "; ".join(self._warnings()) or "no models"
        return ""

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        for spares in self._spare_stages.values():
            while spares:
                spares.pop().close()
        await self.registry.close()
        self.pose_pool.shutdown(wait=False, cancel_futures=True)
        if self.pose_procs is not None:
            self.pose_procs.close()
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self.results.close()
