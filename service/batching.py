"""Micro-batching: windows from every track and every connection share one classifier call.

A request waits at most ``deadline_s`` for others to join (or until ``max_batch`` windows are
queued); the batch then runs on the batcher's own worker thread, so the event loop never blocks
and GPU/CPU calls are made one at a time in the order they were batched. The deadline is only
waited while two or more producers (open streams, clips being processed) use the model: alone,
nobody can join the batch, and waiting would only add latency to every window. What is already
queued still rides along in either case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.classifier import ClassifierRuntime


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Probabilities of one submitted group of windows, with what the batch it rode in cost."""

    probs: np.ndarray  # (n, K)
    batch_size: int
    batch_id: int
    infer_ms: float  # model call
    wait_ms: float  # queued before the call started
    scores: np.ndarray | None = None  # (n,) open-set scores ("unknown" below a threshold), if known


class WindowBatcher(Protocol):
    """What the pipeline needs from a model's batcher (`MicroBatcher`, or an action set's)."""

    async def submit(self, windows: np.ndarray) -> BatchResult: ...

    def add_producer(self) -> None: ...

    def remove_producer(self) -> None: ...

    def producing(self) -> contextlib.AbstractContextManager[None]: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class BatcherView:
    """A batcher that reshapes another's results (``submit`` overridden) and borrows everything else:
    producers, worker and lifetime belong to the inner batcher's model, so ``close`` leaves it open."""

    def __init__(self, inner: WindowBatcher) -> None:
        self.inner = inner

    async def submit(self, windows: np.ndarray) -> BatchResult:
        return await self.inner.submit(windows)

    def add_producer(self) -> None:
        self.inner.add_producer()

    def remove_producer(self) -> None:
        self.inner.remove_producer()

    def producing(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.producing()

    def start(self) -> None:
        self.inner.start()

    async def close(self) -> None:
        """The inner batcher belongs to its model: nothing to close here."""


@dataclass(slots=True)
class _Pending:
    windows: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[int, float], None]


class MicroBatcher:
    """Collect (n, C, T, V) window groups from many callers into (N, C, T, V) model calls."""

    def __init__(
        self,
        runtime: ClassifierRuntime,
        max_batch: int = 64,
        deadline_s: float = 0.005,
        observer: BatchObserver | None = None,
        name: str = "",
        max_queue: int = 0,
    ) -> None:
        self.runtime = runtime
        self.max_batch = max(1, max_batch)
        self.deadline_s = deadline_s
        self._observer = observer
        # bounded (0: unbounded): when full, submitters wait (back-pressure) instead of piling up
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"classify-{name}")
        self._task: asyncio.Task[None] | None = None
        self._batches = 0
        self._producers = 0

    def add_producer(self) -> None:
        """A caller that will submit again and again (a stream, a clip) starts using this model."""
        self._producers += 1

    def remove_producer(self) -> None:
        self._producers = max(0, self._producers - 1)

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        """``add_producer`` for the duration of a block."""
        self.add_producer()
        try:
            yield
        finally:
            self.remove_producer()

    @property
    def producers(self) -> int:
        return self._producers

    @property
    def batches(self) -> int:
        return self._batches

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(RuntimeError("the classifier is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, windows: np.ndarray) -> BatchResult:
        """Classify (n, C, T, V) windows; returns when their batch has run."""
        if windows.ndim != 4:
            raise ValueError(f"windows must be (N, C, T, V), got {windows.shape}")
        self.start()
        n = windows.shape[0]
        if n > self.max_batch:  # a long clip: split so streams' windows can ride in between
            parts = await asyncio.gather(
                *(self.submit(windows[i : i + self.max_batch]) for i in range(0, n, self.max_batch))
            )
            scores = [p.scores for p in parts]
            return BatchResult(
                np.concatenate([p.probs for p in parts]),
                max(p.batch_size for p in parts),
                parts[-1].batch_id,
                sum(p.infer_ms for p in parts),
                max(p.wait_ms for p in parts),
                None if any(x is None for x in scores) else np.concatenate(scores),  # type: ignore[arg-type]
            )
        fut: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(np.asarray(windows, np.float32), fut))
        return await fut

    def predict_sync(self, windows: np.ndarray) -> np.ndarray:
        """Direct call for warm-up and offline tools, on the same worker thread."""
        return self._executor.submit(self.runtime.predict, windows).result()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            group = [first]
            size = first.windows.shape[0]
            until = loop.time() + (self.deadline_s if self._producers > 1 else 0.0)
            while size < self.max_batch:
                timeout = until - loop.time()
                try:
                    nxt = (
                        self._queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                group.append(nxt)
                size += nxt.windows.shape[0]
            await self._execute(group)

    async def _execute(self, group: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        group = [p for p in group if not p.future.done()]  # cancelled callers
        if not group:
            return
        batch = np.concatenate([p.windows for p in group]) if len(group) > 1 else group[0].windows
        started = time.perf_counter()

        scored = getattr(self.runtime, "predict_scored", None)  # probabilities and open-set scores

        def call() -> tuple[np.ndarray, np.ndarray | None, float]:
            t0 = time.perf_counter()
            out, scores = scored(batch) if scored is not None else (self.runtime.predict(batch), None)
            return out, scores, (time.perf_counter() - t0) * 1e3

        try:
            probs, scores, infer_ms = await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self._batches += 1
        if self._observer is not None:
            self._observer(batch.shape[0], infer_ms / 1e3)
        offset = 0
        for p in group:
            n = p.windows.shape[0]
            if not p.future.done():
                p.future.set_result(
                    BatchResult(
                        probs[offset : offset + n],
                        batch.shape[0],
                        self._batches,
                        infer_ms,
                        (started - p.enqueued) * 1e3,
                        None if scores is None else scores[offset : offset + n],
                    )
                )
            offset += n
