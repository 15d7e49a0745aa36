"""A stream's clock: the capture time a client may send with each binary frame.

A binary frame may start with a 12-byte prefix, the ASCII bytes ``SKTS`` and the frame's capture
time in seconds as a little-endian float64, followed by the JPEG/PNG/WebP image. The window clock
then runs on the client's times instead of arrival times, so a client that replays a recording
faster (or slower) than real time, or whose frames are delayed on the way, gets the windows (and
the events) of the recording's own time. Each frame carries its own time: a frame lost or dropped
on the way takes nothing else with it.

`CaptureTimes` checks the times as frames arrive (in the client's order): finite, within
``0..MAX_CAPTURE_TIME_S``, each later than the one before, and on every binary frame of a stream or
on none (two clocks in one stream would put its frames out of order).
"""

from __future__ import annotations

import math
import struct

from service.core.errors import ServiceError

__all__ = ["CAPTURE_MAGIC", "MAX_CAPTURE_TIME_S", "CaptureTimes", "capture_prefix"]

CAPTURE_MAGIC = b"SKTS"
_PREFIX = struct.Struct("<4sd")
# Epoch seconds (~1.8e9) fit; epoch milliseconds (~1.8e12), a common slip, do not. Below this a
# float64 still resolves microseconds.
MAX_CAPTURE_TIME_S = 1e10


def capture_prefix(seconds: float) -> bytes:
    """The prefix a client puts before a frame's image bytes (``prefix + jpeg``)."""
    return _PREFIX.pack(CAPTURE_MAGIC, seconds)


def _refuse(frame_id: int, why: str) -> ServiceError:
    return ServiceError(
        422,
        "invalid_timestamp",
        f"frame {frame_id}: {why}",
        "prefix each binary frame with b'SKTS' + its capture time in seconds (little-endian "
        "float64), increasing, on every frame or on none (docs/api.md)",
    )


class CaptureTimes:
    """The capture times of one connection's binary frames, checked in arrival order."""

    def __init__(self) -> None:
        self.stamped: bool | None = None  # decided by the stream's first binary frame
        self.last: float | None = None

    def split(self, data: bytes, frame_id: int) -> tuple[float | None, bytes]:
        """(capture time or None, image bytes) of a binary frame; `ServiceError`
        ``invalid_timestamp`` when its time breaks the rules above."""
        stamped = data[: len(CAPTURE_MAGIC)] == CAPTURE_MAGIC
        if self.stamped is not None and stamped != self.stamped:
            had = "had" if self.stamped else "had no"
            has = "has" if stamped else "has no"
            raise _refuse(frame_id, f"it {has} capture time, the stream's earlier frames {had} one")
        if not stamped:
            self.stamped = False
            return None, data
        if len(data) < _PREFIX.size:
            raise _refuse(frame_id, f"the capture-time prefix needs {_PREFIX.size} bytes, got {len(data)}")
        _, seconds = _PREFIX.unpack_from(data)
        if not (math.isfinite(seconds) and 0.0 <= seconds <= MAX_CAPTURE_TIME_S):
            raise _refuse(frame_id, f"capture time {seconds!r} s is not within 0..{MAX_CAPTURE_TIME_S:g} s")
        if self.last is not None and seconds <= self.last:
            why = f"capture time {seconds:.6f} s is not after the previous frame's {self.last:.6f} s"
            raise _refuse(frame_id, why)
        self.stamped = True
        self.last = seconds
        return seconds, data[_PREFIX.size :]
