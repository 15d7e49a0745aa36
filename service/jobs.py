"""Asynchronous clip jobs (``POST /recognize?mode=async``): the clip runs in the background of the
replica that received it; its state, progress and result are JSON files in ``SKELACT_JOBS_DIR``, so
``GET /jobs/{id}`` answers on every replica that mounts the folder.

* A job is ``queued`` until its pass starts (a place among ``SKELACT_MAX_CONCURRENT_CLIPS``), then
  ``running`` with frames done of total, then ``done`` (the synchronous call's response) or
  ``failed`` (the error it would have answered). It does not depend on the client's connection.
* The running replica rewrites the file while the job is in progress: on progress (at most every
  `WRITE_EVERY_S`) and at least every third of ``SKELACT_JOB_LEASE_S`` (the heartbeat). A job whose
  file has not been rewritten for a whole lease is reported ``failed`` (``job_lost``): its replica
  died (killed, node lost), so nobody will finish it. Only the owner writes a job's file.
* On shutdown (`JobRunner.close`) jobs get what is left of ``SKELACT_SHUTDOWN_TIMEOUT_S`` to
  finish; the rest are marked ``failed`` (``shutting_down``): submit them again.
* Finished jobs are deleted at ``SKELACT_RESULTS_TTL_S``, like annotated videos (`service.store.Expiry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from service.core.config import Settings
from service.core.errors import ServiceError, internal_message, report_internal
from service.schemas import JobError, JobProgress, JobStatus, RecognizeResponse
from service.store import Expiry, atomic_write, check_id, new_id

__all__ = ["JobRunner", "JobStore", "Progress"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (frames done, frames in the clip if known)
Work = Callable[[Progress], Awaitable[RecognizeResponse]]
WRITE_EVERY_S = 0.5  # progress reaches the file (and GET /jobs) at most this often


class JobRecord(BaseModel):
    """A job's file: what GET /jobs answers, and who runs it with their last heartbeat."""

    status: JobStatus
    owner: str
    heartbeat: float  # time.time() of the owner's last write


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """Job files ``<id>.json`` in ``root``, read by any replica."""

    def __init__(self, root: Path | None, ttl_s: float, lease_s: float) -> None:
        self._own = root is None
        self.root = Path(tempfile.mkdtemp(prefix="skelact-jobs-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.lease_s = lease_s
        self.expiry = Expiry(self.root, ttl_s)

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def save(self, record: JobRecord) -> None:
        atomic_write(self.path(record.status.job_id), record.model_dump_json().encode())

    def status(self, job_id: str) -> JobStatus:
        """The job as its owner last wrote it; ``failed`` when the owner's lease ran out."""
        record = self._read(job_id) if check_id(job_id) else None
        if record is None:
            raise ServiceError(
                404,
                "job_not_found",
                f"no job {job_id!r}",
                f"jobs are kept for {self.expiry.max_age_s:g} s (SKELACT_RESULTS_TTL_S) after they "
                "finish; POST /recognize?mode=async starts one",
            )
        status = record.status
        silent = time.time() - record.heartbeat
        if status.state in ("queued", "running") and silent > self.lease_s:
            status.state = "failed"
            status.error = JobError(
                code="job_lost",
                message=f"the replica running this job ({record.owner}) stopped: no heartbeat for "
                f"{silent:.0f} s (SKELACT_JOB_LEASE_S is {self.lease_s:g} s)",
                hint="submit the clip again",
            )
        return status

    def _read(self, job_id: str) -> JobRecord | None:
        path = self.path(job_id)
        if self.expiry.expired(path):
            return None
        try:
            return JobRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:  # written by another version of the service
            log.warning("job %s: unreadable job file %s", job_id, path)
            return None

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)


class _Job:
    """One job of this replica while it runs: its record, and whether the file is behind."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.dirty = False
        self.written = time.monotonic()

    def progress(self, done: int, total: int | None) -> None:
        status = self.record.status
        status.state = "running"
        status.progress = JobProgress(
            frames_done=done, frames_total=None if total is None else max(total, done)
        )
        self.dirty = True


class JobRunner:
    """Runs this replica's jobs in the background and keeps their files up to date."""

    def __init__(self, store: JobStore, settings: Settings, io_pool: Executor) -> None:
        self.store = store
        self.settings = settings
        self.io_pool = io_pool
        self.owner = f"{socket.gethostname()}/{os.getpid()}"
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_progress(self) -> int:
        return len(self._tasks)

    def admit(self) -> None:
        """Refuse a new job (503 ``busy``) while this replica has as many as it takes clips."""
        s = self.settings
        cap = s.max_concurrent_clips + s.max_queued_clips
        if self.in_progress >= cap:
            raise ServiceError(
                503,
                "busy",
                f"{self.in_progress} clip jobs are in progress on this replica (limit {cap})",
                "retry later; SKELACT_MAX_CONCURRENT_CLIPS and SKELACT_MAX_QUEUED_CLIPS set the limit",
            )

    def submit(self, work: Work, cleanup: Callable[[], None] | None = None) -> JobStatus:
        """Start ``work`` as a job (its file is written before this returns)."""
        self.admit()
        self.store.expiry.run()
        now = _now()
        status = JobStatus(job_id=new_id(), state="queued", created_at=now, updated_at=now)
        job = _Job(JobRecord(status=status, owner=self.owner, heartbeat=time.time()))
        self.store.save(job.record)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(job, work, cleanup), name=f"job-{status.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return status.model_copy()

    async def _run(self, job: _Job, work: Work, cleanup: Callable[[], None] | None) -> None:
        status = job.record.status
        stop = asyncio.Event()
        beats = asyncio.create_task(self._beat(job, stop))
        try:
            result = await work(job.progress)
            status.result = result
            status.state = "done"
            frames = result.stats.frames_processed
            status.progress = JobProgress(frames_done=frames, frames_total=frames)
        except ServiceError as exc:
            self._fail(status, exc.code, exc.message, exc.hint)
        except asyncio.CancelledError:  # close(): the shutdown's time ran out
            self._fail(
                status, "shutting_down", "the server shut down before the job finished", "submit it again"
            )
        except Exception as exc:
            error_id = report_internal(exc, f"clip job {status.job_id}")
            self._fail(status, "internal_error", internal_message(error_id), "report it with the error id")
        finally:
            stop.set()
            await asyncio.gather(beats, return_exceptions=True)  # its last write lands before ours
            if cleanup is not None:
                with contextlib.suppress(OSError):
                    cleanup()
        await self._write(job)

    @staticmethod
    def _fail(status: JobStatus, code: str, message: str, hint: str) -> None:
        status.state = "failed"
        status.error = JobError(code=code, message=message, hint=hint)

    async def _beat(self, job: _Job, stop: asyncio.Event) -> None:
        """Write progress at most every WRITE_EVERY_S, and the heartbeat every third of a lease."""
        period = self.store.lease_s / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(WRITE_EVERY_S, period))
            if stop.is_set():
                return
            if job.dirty or time.monotonic() - job.written >= period:
                try:
                    await self._write(job)
                except OSError as exc:  # a full or unreachable volume: the lease will tell readers
                    log.warning("job %s: cannot write its state: %s", job.record.status.job_id, exc)

    async def _write(self, job: _Job) -> None:
        job.dirty = False
        job.written = time.monotonic()
        job.record.heartbeat = time.time()
        job.record.status.updated_at = _now()
        data = job.record.model_copy(deep=job.record.status.result is None)
        await asyncio.get_running_loop().run_in_executor(self.io_pool, self.store.save, data)

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for this replica's jobs; the rest are failed (``shutting_down``)."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=max(0.0, timeout))
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if late:
            log.warning("%d clip jobs did not finish before shutdown (marked failed)", len(late))
