"""Process-wide service state: settings, models, pose resources, pools, metrics, readiness.

Built by the app's lifespan (and by the offline CLI, which runs the same pipeline without HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.action_sets import SET_PREFIX, ActionSets, default_sets_dir
from service.combined import combine, split_name
from service.core.config import Settings
from service.core.errors import ServiceError
from service.jobs import JobRunner, JobStore
from service.lifecycle import Lifecycle, Stoppable
from service.load import ClipAdmission
from service.memory import release_memory
from service.metrics import Metrics
from service.open_set import with_unknown
from service.pose_pool import PosePool
from service.providers import describe as describe_providers
from service.providers import usable as usable_providers
from service.registry import LoadedModel, ModelRegistry
from service.results import ResultStore

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)  # open streams, draining on shutdown
    registry: ModelRegistry = field(init=False)
    io_pool: ThreadPoolExecutor = field(init=False)
    pose: PosePool = field(init=False)
    results: ResultStore = field(init=False)
    jobs: JobRunner = field(init=False)
    clip_admission: ClipAdmission = field(init=False)  # SKELACT_MAX_CONCURRENT_CLIPS clips at once
    action_sets: ActionSets = field(init=False)  # custom action sets (service.action_sets)
    ready: bool = False
    starting: bool = True
    pose_info: str = ""
    pose_error: str = ""
    provider_note: str = ""  # one line: the provider the models run on, and why (service.providers)
    providers_here: list[str] = field(default_factory=list)  # the requested ones that can run here
    warnings: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    _ready_event: asyncio.Event | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.registry = ModelRegistry(s, self.metrics)
        self.io_pool = ThreadPoolExecutor(max(4, s.max_concurrent_clips * 2), thread_name_prefix="io")
        self.pose = PosePool(s, self.metrics, self.lifecycle, self.io_pool)
        self.results = ResultStore(s.results_dir, s.results_keep, s.results_ttl_s)
        self.jobs = JobRunner(JobStore(s.jobs_dir, s.results_ttl_s, s.job_lease_s), s, self.io_pool)
        self.clip_admission = ClipAdmission(s.max_concurrent_clips)
        self.action_sets = ActionSets(s.action_sets_dir or default_sets_dir(), self.registry)
        m = self.metrics
        m.stream_capacity.set(s.max_streams)
        m.active_clips.set_function(lambda: self.clip_admission.running)
        m.queued_clips.set_function(lambda: self.clip_admission.waiting)
        m.pose_busy.set_function(lambda: self.pose.slots.meter.ratio())
        m.draining.set_function(lambda: int(self.lifecycle.draining))

    def readiness(self) -> tuple[bool, str]:
        """Whether a load balancer should send this replica new work (``/health/ready``), and why
        not: warming up, failed, shutting down, or at its stream capacity (it still serves the
        streams and clips it has, and clips sent to it)."""
        if not self.ready:
            return False, self.not_ready_reason() or "not ready"
        open_streams, cap = self.lifecycle.streams, self.settings.max_streams
        if open_streams >= cap:
            return False, f"at stream capacity: {open_streams} of {cap} streams open (SKELACT_MAX_STREAMS)"
        return True, ""

    def model(self, name: str | None, unknown_threshold: float | None = None) -> LoadedModel:
        """A model, an action set (``set:NAME``), or a set next to a base model (``set:NAME,BASE``,
        `service.combined`) by name, with ``unknown`` (`service.open_set`)."""
        pair = None if name is None else split_name(name)
        if pair is not None:
            taught, base = self.action_sets.model(pair[0]), self._classifier(pair[1])
            return combine(taught, base, unknown_threshold, self.settings.combined_first == "set")
        if name is not None and name.startswith(SET_PREFIX):
            return with_unknown(self.action_sets.model(name.removeprefix(SET_PREFIX)), unknown_threshold)
        return with_unknown(self._classifier(name), unknown_threshold)

    def _classifier(self, name: str | None) -> LoadedModel:
        model = self.registry.get(name)
        if model.manifest.kind == "embedding":
            raise ServiceError(
                422,
                "embedding_model",
                f"model {model.name!r} is an embedding: it has no labels of its own",
                f"enrol examples into an action set (POST /action-sets) and use model={SET_PREFIX}NAME",
            )
        return model

    @property
    def ready_event(self) -> asyncio.Event:
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        return self._ready_event

    @contextlib.asynccontextmanager
    async def stream_open(self, stream: Stoppable) -> AsyncIterator[None]:
        """An open WebSocket stream, counted once (`Lifecycle`): shutdown drains it (1001). When
        the last stream closes, spare estimators are rebuilt and freed memory is handed back."""
        self.lifecycle.add(stream)
        self.metrics.active_streams.inc()
        try:
            yield
        finally:
            self.lifecycle.discard(stream)
            self.metrics.active_streams.dec()
            self.pose.refill_spares()  # when that was the last stream: build spares now, stalling no one

    async def release_memory(self) -> None:
        """Hand freed heap pages back to the OS, off the event loop (`service.memory`)."""
        with contextlib.suppress(RuntimeError):  # the pool is gone when the server has stopped
            await asyncio.get_running_loop().run_in_executor(self.io_pool, release_memory)

    async def start(self) -> None:
        """Load + warm up models and pose off the event loop; then mark ready."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.io_pool, self.registry.load_all)
            try:
                self.pose_info = await self.pose.run(self.pose.warm)
            except Exception as exc:
                log.exception("pose estimator failed to start")
                self.pose_error = f"{type(exc).__name__}: {exc}"
            for m in self.registry.models.values():
                m.batcher.start()
            if not self.pose_error:
                self.pose.refill_spares()
                await self.pose.wait_for_refill()  # ready with the spares built: a build later stalls streams
            self.providers_here = usable_providers(list(self.settings.providers))
            self.provider_note = self._provider_note()
            self.warnings = self._warnings()
            strict_failure = self.settings.strict_models and bool(self.registry.failed)
            self.ready = bool(self.registry.models) and not self.pose_error and not strict_failure
        finally:
            self.starting = False
            self.ready_event.set()
        if self.provider_note and not self._gpu_unusable():
            log.info("%s", self.provider_note)  # else it is the first warning, logged below
        for w in self.warnings:
            log.warning("%s", w)
        if not self.ready:
            log.error("start-up failed: %s", self.not_ready_reason())

    def _provider_note(self) -> str:
        by_provider: dict[str, list[str]] = {}
        for name, m in sorted(self.registry.models.items()):
            by_provider.setdefault(m.runtime.provider, []).append(name)
        if len(by_provider) == 1:
            return describe_providers(self.settings.providers, next(iter(by_provider)))
        return "; ".join(
            f"{', '.join(names)}: {describe_providers(self.settings.providers, p)}"
            for p, names in by_provider.items()
        )

    def _gpu_unusable(self) -> bool:
        """A GPU provider was asked for but none can run on this host, so the models run on CPU."""
        s = self.settings
        return s.gpu_requested and bool(self.registry.models) and self.providers_here == ["cpu"]

    def _warnings(self) -> list[str]:
        out = []
        s = self.settings
        if self._gpu_unusable():  # one warning for every model, naming only what can run here
            out.append(
                f"{self.provider_note} (available here: {', '.join(self.providers_here)}); to run on "
                "the GPU, install the NVIDIA driver and the CUDA/cuDNN runtime, or set "
                "SKELACT_PROVIDERS=cpu to silence this"
            )
        for m in self.registry.models.values():
            if m.runtime.gpu_fell_back:
                out.append(
                    f"model {m.name}: a GPU provider was asked for (SKELACT_PROVIDERS="
                    f"{','.join(s.providers)}) and can run here, but the model runs on CPU; "
                    f"available: {m.runtime.choice.available}. See the log for ONNX Runtime's error, "
                    f"or set SKELACT_PROVIDERS=cpu to silence this"
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
        await self.jobs.close(self.lifecycle.time_left())  # jobs in flight get the shutdown's time
        await self.pose.close()
        await self.registry.close()
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self.results.close()
        self.jobs.store.close()
