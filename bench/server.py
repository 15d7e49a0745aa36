"""The real service as its own process (``python -m service serve`` on a free loopback port).

Clients in the benchmark process must not share the server's GIL or event loop, so the server
always runs in a subprocess; its CPU time and memory are read with psutil (process + children,
which covers ``SKELACT_POSE_EXECUTOR=process`` workers), its counters from ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from skeleton.paths import REPO_ROOT

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


class ServerError(RuntimeError):
    """The service did not start or did not become ready."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> dict[MetricKey, float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def metric_total(snap: dict[MetricKey, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in snap.items() if n == name and want <= set(lab))


def metric_delta(
    before: dict[MetricKey, float], after: dict[MetricKey, float], name: str, **labels: str
) -> float:
    return metric_total(after, name, **labels) - metric_total(before, name, **labels)


@dataclass
class ServerHandle:
    url: str
    port: int
    process: psutil.Process
    ready: dict[str, Any]
    log_path: Path | None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def metrics(self) -> dict[MetricKey, float]:
        r = self.client.get(self.url + "/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)

    def _family(self) -> list[psutil.Process]:
        procs = [self.process]
        with contextlib.suppress(psutil.Error):
            procs += self.process.children(recursive=True)
        return procs

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and its worker processes so far."""
        total = 0.0
        for p in self._family():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self._family():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total


@contextlib.contextmanager
def launch_server(
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 300.0,
    cpus: set[int] | None = None,
) -> Iterator[ServerHandle]:
    """Start the service, wait for ``/health/ready`` (200), yield a handle, stop it. ``cpus``: pin
    the server (all its threads and worker processes) to these CPUs, like a pod's CPU limit."""
    port = free_port()
    full_env = {
        **os.environ,
        "SKELACT_HOST": "127.0.0.1",
        "SKELACT_PORT": str(port),
        "SKELACT_LOG_LEVEL": os.environ.get("SKELACT_LOG_LEVEL", "warning"),
        "SKELACT_API_KEYS": "",  # a private loopback server: no authentication round trips
        **(env or {}),
    }
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p)
    log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=full_env,
        cwd=str(REPO_ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    url = f"http://127.0.0.1:{port}"
    handle: ServerHandle | None = None
    try:
        body = _wait_ready(url, proc, ready_timeout_s, log_path)
        handle = ServerHandle(url, port, psutil.Process(proc.pid), body, log_path)
        yield handle
    finally:
        if handle is not None:
            handle.client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if log_path is not None and hasattr(log, "close"):
            log.close()


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path | None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while True:
            if proc.poll() is not None:
                raise ServerError(f"the service exited with code {proc.returncode}:\n{_tail(log)}")
            try:
                r = client.get(url + "/health/ready")
            except httpx.HTTPError:
                r = None
            if r is not None:
                body: dict[str, Any] = r.json()
                if r.status_code == 200:
                    return body
                if body.get("status") == "error":
                    raise ServerError(f"the service is not ready: {body.get('reason')}")
            if time.monotonic() > deadline:
                raise ServerError(f"the service was not ready after {timeout_s:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)


class ResourceSampler:
    """Samples the server's RSS and the whole machine's CPU use in a thread, while a block runs.

    The server's CPU utilisation is its CPU time over the wall time (100 % = one core busy).
    """

    def __init__(self, server: ServerHandle, period_s: float = 0.2) -> None:
        self.server = server
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self.rss: list[int] = []
        self.system_cpu: list[float] = []
        self._me = psutil.Process()
        self.result: dict[str, float] = {}

    def __enter__(self) -> ResourceSampler:
        psutil.cpu_percent(None)
        self._t0 = time.perf_counter()
        self._cpu0 = self.server.cpu_seconds()
        t = self._me.cpu_times()
        self._me0 = t.user + t.system
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.rss.append(self.server.rss_bytes())
            self.system_cpu.append(psutil.cpu_percent(None))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cpu = self.server.cpu_seconds() - self._cpu0
        t = self._me.cpu_times()
        end_rss = self.server.rss_bytes()
        self.rss.append(end_rss)
        cores = os.cpu_count() or 1
        self.result = {
            "wall_s": round(wall, 3),
            "server_cpu_percent": round(100.0 * cpu / wall, 1),
            "bench_cpu_percent": round(100.0 * (t.user + t.system - self._me0) / wall, 1),
            "system_cpu_percent": round(cores * sum(self.system_cpu) / len(self.system_cpu), 1)
            if self.system_cpu
            else float("nan"),
            "server_rss_peak_mib": round(max(self.rss) / 2**20, 1),
            "server_rss_end_mib": round(end_rss / 2**20, 1),
        }
