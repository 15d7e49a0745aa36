"""Limits against bad input and overload (docs/security.md).

* ``RequestLimitsMiddleware`` (HTTP): request bodies are capped while they stream in (413, also
  for chunked uploads that send no Content-Length), every chunk must arrive within
  ``read_timeout_s`` (408: slow clients cannot hold a connection), a response must start within
  ``request_timeout_s`` (503), and ``POST /recognize`` admits at most ``max_concurrent_clips +
  max_queued_clips`` requests at once (503 ``busy`` with Retry-After beyond, before the body is read).
* ``image_size`` / ``check_image``: the dimensions a JPEG, PNG or WebP header declares, read
  without decoding, so a frame claiming 60000x60000 pixels is refused before OpenCV allocates it.
* ``StreamGuard``: per-connection checks of WebSocket messages (size, image format and
  dimensions, message rate: a token bucket of ``max_stream_fps`` with two seconds of burst).

Settings are read on every request, so changing them at run time (tests do) takes effect.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError
from service.schemas import SkeletonSequenceIn, WindowInfo
from service.settings import Settings

log = logging.getLogger(__name__)

# multipart framing around the file (boundaries, part headers, small fields)
MULTIPART_SLACK = 1 << 16
# routes whose requests run the heavy pipeline: admitted up to the clip limits
HEAVY_ROUTES = frozenset({("POST", "/recognize")})


def error_body(code: str, message: str, hint: str = "") -> dict[str, Any]:
    """The service's one error shape (service/errors.py)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if hint:
        err["hint"] = hint
    return {"error": err}


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class RequestLimitsMiddleware:
    """Body size, read timeout, response timeout and admission of heavy requests (pure ASGI)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.in_flight = 0  # heavy requests admitted and not finished

    def body_limit(self, headers: Headers) -> tuple[int, str]:
        s = self.settings
        if headers.get("content-type", "").lower().startswith("application/json"):
            return s.max_json_bytes, "SKELACT_MAX_JSON_MB"
        return s.max_upload_bytes + MULTIPART_SLACK, "SKELACT_MAX_UPLOAD_MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        headers = Headers(scope=scope)
        limit, knob = self.body_limit(headers)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _reply(scope, receive, send, 413, _too_large(int(length), limit, knob))
            return
        heavy = (scope.get("method", ""), scope.get("path", "")) in HEAVY_ROUTES
        if heavy:
            cap = s.max_concurrent_clips + s.max_queued_clips
            if self.in_flight >= cap:
                body = error_body(
                    "busy",
                    f"{self.in_flight} recognition requests are in progress or waiting (limit {cap})",
                    "retry later; SKELACT_MAX_CONCURRENT_CLIPS and SKELACT_MAX_QUEUED_CLIPS set the limit",
                )
                await _reply(scope, receive, send, 503, body, {"Retry-After": "5"})
                return
            self.in_flight += 1
        try:
            await self._run(scope, receive, send, limit, knob)
        finally:
            if heavy:
                self.in_flight -= 1

    async def _run(self, scope: Scope, receive: Receive, send: Send, limit: int, knob: str) -> None:
        s = self.settings
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. a response waiting for http.disconnect: no read timeout
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), s.read_timeout_s)
            except TimeoutError:
                raise ServiceError(
                    408,
                    "read_timeout",
                    f"no request data for {s.read_timeout_s:g} s",
                    "send the body without pauses (SKELACT_READ_TIMEOUT_S)",
                ) from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise ServiceError(413, "too_large", *_too_large_text(received, limit, knob))
                if not msg.get("more_body", False):
                    body_done = True
            else:
                body_done = True
            return msg

        try:
            async with asyncio.timeout(s.request_timeout_s) as deadline:

                async def timed_send(msg: Message) -> None:
                    nonlocal started
                    if msg["type"] == "http.response.start":
                        started = True
                        deadline.reschedule(None)  # the response streams at the client's pace
                    await send(msg)

                await self.app(scope, limited_receive, timed_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            log.warning(
                "%s %s: no response after %g s", scope.get("method"), scope["path"], s.request_timeout_s
            )
            body = error_body(
                "timeout",
                f"the request took longer than {s.request_timeout_s:g} s",
                "send a shorter clip, or raise SKELACT_REQUEST_TIMEOUT_S",
            )
            await _reply(scope, receive, send, 503, body)


def _too_large_text(size: int, limit: int, knob: str) -> tuple[str, str]:
    return (
        f"request body is over {_mib(size)}; the limit is {_mib(limit)}",
        f"send a shorter or more compressed clip, or raise {knob}",
    )


def _too_large(size: int, limit: int, knob: str) -> dict[str, Any]:
    return error_body("too_large", *_too_large_text(size, limit, knob))


async def _reply(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


# ----------------------------------------------------------------------------- image headers

_PNG = b"\x89PNG\r\n\x1a\n"
# SOF markers: baseline, extended, progressive, lossless, hierarchical, arithmetic
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_format(data: bytes) -> str | None:
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == _PNG:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None  # not at a marker: malformed
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (seglen,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if seglen < 2:
            return None
        i += 2 + seglen
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of a JPEG, PNG or WebP, without decoding it.

    None when the format is not one of these or the header is malformed (the decoder then gives
    the precise error).
    """
    fmt = image_format(data)
    size: tuple[int, int] | None = None
    if fmt == "jpeg":
        size = _jpeg_size(data)
    elif fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        size = struct.unpack(">II", data[16:24])
    elif fmt == "webp":
        size = _webp_size(data)
    if fmt is None or size is None:
        return None
    return fmt, size[0], size[1]


def check_image(data: bytes, max_side: int) -> tuple[str, str] | None:
    """None when the bytes may go to the decoder, else (error code, message) for the client."""
    if image_format(data) is None:
        return (
            "undecodable_image",
            f"not a JPEG, PNG or WebP image ({len(data)} bytes, starting {data[:8].hex()})",
        )
    size = image_size(data)
    if size is not None:
        fmt, w, h = size
        if max(w, h) > max_side:
            return (
                "frame_too_large",
                f"the {fmt} header says {w}x{h} pixels; the limit is {max_side} px per side "
                "(SKELACT_MAX_FRAME_SIDE): send frames of at most 1280 px",
            )
    return None


# ----------------------------------------------------------------------------- WebSocket messages


class RateLimiter:
    """Token bucket: ``rate`` events per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst)
        self.tokens = self.capacity
        self.t = time.perf_counter()

    def allow(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class StreamGuard:
    """Checks every message of one WebSocket stream before it costs anything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rate = RateLimiter(settings.max_stream_fps, 2 * settings.max_stream_fps)
        self._warned_at = -1e9

    def over_rate(self, now: float) -> tuple[str, str] | None:
        """(code, message) when this message exceeds the stream's rate; None otherwise."""
        if self.rate.allow(now):
            return None
        return (
            "rate_limited",
            f"more than {self.settings.max_stream_fps:g} messages per second (SKELACT_MAX_STREAM_FPS): "
            "messages are being dropped; pace the client",
        )

    def should_report(self, now: float) -> bool:
        """Rate errors are reported at most once a second (an error per message would amplify)."""
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            return True
        return False

    def check_text(self, text: str) -> tuple[str, str] | None:
        limit = self.settings.max_message_bytes
        size = len(text) if len(text) * 4 <= limit else len(text.encode("utf-8", "replace"))
        if size > limit:
            return (
                "message_too_large",
                f"text message of {size} bytes; the limit is {limit} (SKELACT_MAX_MESSAGE_BYTES)",
            )
        return None

    def check_frame(self, data: bytes, frame_id: int) -> tuple[str, str] | None:
        limit = self.settings.max_frame_bytes
        if len(data) > limit:
            return (
                "frame_too_large",
                f"frame {frame_id} is {len(data)} bytes, the limit is {limit}; "
                "send smaller JPEGs (e.g. 640 px wide, quality 80)",
            )
        bad = check_image(data, self.settings.max_frame_side)
        if bad is not None:
            return bad[0], f"frame {frame_id}: {bad[1]}"
        return None


# ----------------------------------------------------------------------------- skeleton sequences


def check_skeleton_sequence(seq: SkeletonSequenceIn, window: WindowInfo, settings: Settings) -> None:
    """Refuse skeleton clips that would cost more than a long video (413), before any work.

    The span is limited like a video's duration. A track with its own ``id`` is cut into windows
    from its first to its last sighting, gaps included, so two sightings far apart make many
    windows from a tiny body: the budget is what a ``max_video_seconds`` clip with ``max_people``
    people tracked throughout would make.
    """
    max_seconds, people = settings.max_video_seconds, settings.max_people
    span = seq.frames[-1].timestamp - seq.frames[0].timestamp
    if span > max_seconds:
        raise ServiceError(
            413,
            "video_too_long",
            f"the skeletons span {span:.0f} s, the limit is {max_seconds:.0f} s",
            "send a shorter sequence or raise SKELACT_MAX_VIDEO_SECONDS",
        )
    hop = window.stride / window.fps
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for f in seq.frames:
        for p in f.people:
            if p.id is not None:
                first.setdefault(p.id, f.timestamp)
                last[p.id] = f.timestamp
    windows = sum(int((last[i] - first[i]) / hop) + 1 for i in first)
    budget = (int(max_seconds / hop) + 1) * people
    if windows > budget:
        raise ServiceError(
            413,
            "too_many_windows",
            f"the tracks with client ids span {windows} model windows; the limit is {budget} "
            f"({max_seconds:.0f} s of {people} people)",
            "send fewer or shorter tracks (a track's windows cover the time from its first to its "
            "last sighting), or raise SKELACT_MAX_VIDEO_SECONDS / SKELACT_MAX_PEOPLE",
        )
