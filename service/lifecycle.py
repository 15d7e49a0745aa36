"""Graceful shutdown: open streams finish their current frame and close with 1001 (going away).

uvicorn, on SIGTERM, closes every WebSocket at once with 1012 and only then tells the app.
``GracefulServer`` first stops listening, marks the service as draining (``/health/ready`` answers
503 so load balancers stop routing here, new streams and recognitions are refused) and asks each
open stream to stop: the stream finishes the frame it is processing, sends ``{"type": "error",
"code": "shutting_down"}`` and closes with code 1001. uvicorn's own shutdown then waits for HTTP
requests in progress, and the app's for its clip jobs (`service.jobs`), within what is left of
``shutdown_timeout_s`` (``Lifecycle.time_left``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn

if TYPE_CHECKING:
    from service.core.config import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    def stop(self) -> None:
        """Finish the current unit of work, then end (a stream: close with 1001)."""


class Lifecycle:
    """Open streams of one service, and whether it is shutting down."""

    def __init__(self) -> None:
        self.draining = False
        self.deadline: float | None = None  # time.monotonic() by which shutdown must be done
        self._streams: set[Stoppable] = set()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def add(self, stream: Stoppable) -> None:
        self._streams.add(stream)
        if self.draining:
            stream.stop()

    def discard(self, stream: Stoppable) -> None:
        self._streams.discard(stream)

    def time_left(self) -> float:
        """Seconds of the shutdown's budget left (0 when not shutting down by SIGTERM)."""
        return 0.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def drain(self, timeout: float) -> int:
        """Stop every stream and wait up to ``timeout`` s for them to close; returns those left."""
        self.draining = True
        self.deadline = time.monotonic() + timeout
        for s in list(self._streams):
            s.stop()
        deadline = time.monotonic() + timeout
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(self._streams)


async def drain_service(state: ServiceState, timeout: float) -> None:
    """Mark the service not ready and close its streams (1001), waiting up to ``timeout`` s."""
    state.ready = False
    n = state.lifecycle.streams
    left = await state.lifecycle.drain(timeout)
    if n:
        log.info("closed %d of %d open streams (1001) for shutdown", n - left, n)
    if left:
        log.warning("%d streams did not close within %g s", left, timeout)


class GracefulServer(uvicorn.Server):
    """uvicorn.Server that drains the app's streams before uvicorn closes connections (1012)."""

    def __init__(self, config: uvicorn.Config, app: Any, drain_timeout: float) -> None:
        super().__init__(config)
        self.skelact_app = app
        self.drain_timeout = drain_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting; super().shutdown closes them again (no-op)
            server.close()
        state = getattr(self.skelact_app.state, "service", None)
        t0 = time.monotonic()
        if state is not None:
            await drain_service(state, self.drain_timeout)
        # HTTP requests in progress get what is left of the budget
        left = self.drain_timeout - (time.monotonic() - t0)
        self.config.timeout_graceful_shutdown = max(1, round(left))
        await super().shutdown(sockets)


def serve(app: Any, settings: Settings) -> None:
    """Run ``app`` with uvicorn, draining streams on SIGTERM/SIGINT (``python -m service serve``)."""
    from service.core.security import install_log_redaction

    install_log_redaction()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # the protocol-level cap (close 1009 beyond); the app answers smaller oversize messages itself
        ws_max_size=max(settings.max_frame_bytes, settings.max_message_bytes) + 1024,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    GracefulServer(config, app, settings.shutdown_timeout_s).run()
