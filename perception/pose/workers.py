"""Pose estimation in worker processes, for when threads do not scale (the GIL is held too often).

Each worker process (spawned: forking a process that already runs MediaPipe threads corrupts
its heap) hosts the estimators of the streams and clips assigned to it; a stream stays on one
worker because its estimator is stateful (VIDEO-mode tracking). Requests to one worker are
serialised by a lock; frames travel as pickled arrays (about 1 ms for 640x480), landmarks come
back as ``PersonPose`` objects. The service selects them with ``SKELACT_POSE_EXECUTOR=process``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from perception.pose.estimator import PoseSpec
from skeleton.types import PersonPose

log = logging.getLogger(__name__)


def _worker_main(conn: Connection) -> None:
    """Serve open/estimate/close requests until told to exit (runs in the child process)."""
    estimators: dict[int, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        op = msg[0]
        try:
            if op == "open":
                _, sid, spec = msg
                estimators[sid] = spec.create()
                conn.send(("ok", estimators[sid].name))
            elif op == "estimate":
                _, sid, frame, ts, expected = msg
                conn.send(("ok", estimators[sid].estimate(frame, ts, expected)))
            elif op == "close":
                est = estimators.pop(msg[1], None)
                if est is not None:
                    est.close()
                conn.send(("ok", None))
            elif op == "exit":
                break
            else:
                conn.send(("error", f"unknown request {op!r}"))
        except Exception as exc:  # reported to the caller, the worker keeps serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    for est in estimators.values():
        est.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0

    def call(self, *msg: Any) -> Any:
        with self.lock:
            self.conn.send(msg)
            status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"pose worker: {value}")
        return value


class RemoteEstimator:
    """A ``PoseEstimator`` whose MediaPipe graph lives in a worker process."""

    def __init__(self, worker: _Worker, sid: int, name: str, max_people: int) -> None:
        self._worker = worker
        self._sid = sid
        self.name = name
        self.max_people = max_people
        self._closed = False

    def estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        poses: tuple[PersonPose, ...] = self._worker.call(
            "estimate", self._sid, frame_rgb, float(timestamp_s), tuple(expected)
        )
        return poses

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._worker.sessions -= 1
            with contextlib.suppress(OSError, EOFError, RuntimeError):
                self._worker.call("close", self._sid)


class PoseWorkerPool:
    """``workers`` spawned processes; a new estimator goes to the worker with the fewest."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        for _ in range(max(1, workers)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="pose-worker")
            proc.start()
            child.close()
            self._workers.append(_Worker(proc, parent))
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open(self, spec: PoseSpec) -> RemoteEstimator:
        with self._lock:
            worker = min(self._workers, key=lambda w: w.sessions)
            worker.sessions += 1
            sid = next(self._ids)
        try:
            name = worker.call("open", sid, spec)
        except Exception:
            worker.sessions -= 1
            raise
        return RemoteEstimator(worker, sid, str(name), spec.max_people)

    def close(self) -> None:
        for w in self._workers:
            try:
                with w.lock:
                    w.conn.send(("exit",))
            except (OSError, EOFError):
                pass
        for w in self._workers:
            w.process.join(5)
            if w.process.is_alive():
                w.process.kill()
