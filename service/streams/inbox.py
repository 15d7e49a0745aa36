"""Latest-frame-wins mailbox between a stream's receiver (the route) and its scheduler.

The receiver reads the socket continuously and offers every frame; only the newest one not yet
taken is kept. When the client sends faster than the server keeps up, stale frames are dropped
and counted, so latency stays bounded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from service.action_set_schemas import EnrolMessage
from service.metrics import Metrics
from service.schemas import ConfigMessage, SkeletonFrameIn

__all__ = ["MAX_PENDING_CONFIGS", "Arrival", "Inbox"]

# config messages waiting for the scheduler; older ones are dropped (each re-sends hello anyway)
MAX_PENDING_CONFIGS = 4


@dataclass(frozen=True, slots=True)
class Arrival:
    """A frame as the receiver got it: raw bytes or a skeleton frame, with its arrival time (and
    the client's capture time, when it sent one: `service.streams.clock`)."""

    frame_id: int
    received_at: float  # time.perf_counter()
    image: bytes | None = None
    skeleton: SkeletonFrameIn | None = None
    capture_time: float | None = None  # seconds on the client's clock


@dataclass
class Inbox:
    """What the receiver hands the scheduler, and the connection's frame counters."""

    metrics: Metrics
    pending: Arrival | None = None
    configs: list[ConfigMessage | EnrolMessage] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False  # the client went away (or the receiver stopped)
    shutdown: bool = False  # the server is going down: finish the current frame, then close 1001
    idle: bool = False  # the client sent nothing for stream_idle_timeout_s
    received: int = 0
    processed: int = 0
    dropped: int = 0
    working: int = 0  # frames taken by the scheduler and not yet answered
    answered_at: float = 0.0  # time.perf_counter() when the last frame in work was answered

    @property
    def awaits_server(self) -> bool:
        """A frame of the client's is waiting or in work: the client is waiting for us, not idle."""
        return self.pending is not None or self.working > 0

    def quiet_for(self, now: float) -> float:
        """Seconds the client has been the one to act: 0 while a frame of its own waits or is in
        work, else the time since its last frame was answered."""
        return 0.0 if self.awaits_server else now - self.answered_at

    def answered(self) -> None:
        """A frame taken by the scheduler has had its reply (or error)."""
        self.working -= 1
        self.answered_at = time.perf_counter()
        self.wake.set()

    def next_frame_id(self) -> int:
        """Count a received frame (whether or not it is kept); returns its id."""
        frame_id = self.received
        self.received += 1
        self.metrics.frames_received.labels(source="stream").inc()
        return frame_id

    def drop(self) -> None:
        self.dropped += 1
        self.metrics.frames_dropped.inc()

    def offer(self, arrival: Arrival) -> None:
        """Keep ``arrival`` as the next frame; a frame still waiting is dropped."""
        if self.pending is not None:
            self.drop()
        self.pending = arrival
        self.wake.set()

    def configure(self, config: ConfigMessage | EnrolMessage) -> None:
        self.configs.append(config)
        del self.configs[:-MAX_PENDING_CONFIGS]
        self.wake.set()

    def stop(self) -> None:
        """Shutdown (`service.lifecycle`): end after the frame in progress (close 1001)."""
        self.shutdown = True
        self.wake.set()

    def close(self, idle: bool = False) -> None:
        """The receiver is done: the client left, or (``idle``) sent nothing for too long."""
        self.idle = idle
        self.closed = True
        self.wake.set()
