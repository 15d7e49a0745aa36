"""Limits against bad input and overload (docs/security.md).

* ``RequestLimitsMiddleware`` (HTTP): request bodies are capped while they stream in (413, also
  for chunked uploads that send no Content-Length), every chunk must arrive within
  ``read_timeout_s`` (408: slow clients cannot hold a connection), a response must start within
  ``request_timeout_s`` (503), and ``POST /recognize`` admits at most ``max_concurrent_clips +
  max_queued_clips`` requests at once (503 ``busy`` with Retry-After beyond, before the body is read).
* ``StreamGuard``: per-connection checks of WebSocket messages (size, image format and the
  dimensions its header declares (`service.core.image_headers`), message rate: a token bucket of
  ``max_stream_fps`` with two seconds of burst).
* ``check_skeleton_sequence``: skeleton clips that would cost more than a long video (413).

Settings are read on every request, so changing them at run time (tests do) takes effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.config import Settings
from service.core.errors import ServiceError, error_body, too_large
from service.core.image_headers import image_format, image_size
from service.schemas import SkeletonSequenceIn, WindowInfo

log = logging.getLogger(__name__)

# multipart framing around the file (boundaries, part headers, small fields)
MULTIPART_SLACK = 1 << 16
# routes whose requests run the heavy pipeline: admitted up to the clip limits
HEAVY_ROUTES = frozenset({("POST", "/recognize")})


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
            refused = too_large(int(length), limit, knob)
            _count_refused(scope, refused.code)
            await _reply(scope, receive, send, refused)
            return
        heavy = (scope.get("method", ""), scope.get("path", "")) in HEAVY_ROUTES
        if heavy:
            cap = s.max_concurrent_clips + s.max_queued_clips
            if self.in_flight >= cap:
                busy = ServiceError(
                    503,
                    "busy",
                    f"{self.in_flight} recognition requests are in progress or waiting (limit {cap})",
                    "retry later; SKELACT_MAX_CONCURRENT_CLIPS and SKELACT_MAX_QUEUED_CLIPS set the limit",
                )
                _count_refused(scope, busy.code)
                await _reply(scope, receive, send, busy, {"Retry-After": "5"})
                return
            self.in_flight += 1
            _publish_in_progress(scope, self.in_flight)
        try:
            await self._run(scope, receive, send, limit, knob)
        finally:
            if heavy:
                self.in_flight -= 1
                _publish_in_progress(scope, self.in_flight)

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
                    raise too_large(received, limit, knob)
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
            timeout = ServiceError(
                503,
                "timeout",
                f"the request took longer than {s.request_timeout_s:g} s",
                "send a shorter clip, or raise SKELACT_REQUEST_TIMEOUT_S",
            )
            await _reply(scope, receive, send, timeout)


def _service(scope: Scope) -> Any:
    """The app's `ServiceState` (its metrics), once its lifespan has started; else None."""
    return getattr(getattr(scope.get("app"), "state", None), "service", None)


def _publish_in_progress(scope: Scope, count: int) -> None:
    """``skelact_recognize_in_progress``."""
    if (service := _service(scope)) is not None:
        service.metrics.recognize_in_progress.set(count)


def _count_refused(scope: Scope, code: str) -> None:
    """A ``POST /recognize`` refused here, before its route: counted in
    ``skelact_recognize_requests_total`` like the outcomes the route counts itself."""
    heavy = (scope.get("method", ""), scope.get("path", "")) in HEAVY_ROUTES
    if heavy and (service := _service(scope)) is not None:
        service.metrics.requests.labels(outcome=code).inc()


async def _reply(
    scope: Scope, receive: Receive, send: Send, error: ServiceError, headers: dict[str, str] | None = None
) -> None:
    body = error_body(error.code, error.message, error.hint)
    await JSONResponse(body, status_code=error.status, headers=headers)(scope, receive, send)


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
    """Checks every message of one WebSocket stream before it costs anything; a refused message
    gets a `ServiceError` (sent on the socket, which stays open)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rate = RateLimiter(settings.max_stream_fps, 2 * settings.max_stream_fps)
        self._warned_at = -1e9

    def over_rate(self, now: float) -> ServiceError | None:
        """The error when this message exceeds the stream's rate; None otherwise."""
        if self.rate.allow(now):
            return None
        return ServiceError(
            429,
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

    def check_text(self, text: str) -> ServiceError | None:
        limit = self.settings.max_message_bytes
        size = len(text) if len(text) * 4 <= limit else len(text.encode("utf-8", "replace"))
        if size > limit:
            return ServiceError(
                413,
                "message_too_large",
                f"text message of {size} bytes; the limit is {limit} (SKELACT_MAX_MESSAGE_BYTES)",
            )
        return None

    def check_frame(self, data: bytes, frame_id: int) -> ServiceError | None:
        """None when the bytes may go to the decoder: an image format we decode, of a size within
        the limits (bytes, and pixels per side as its header declares)."""
        limit = self.settings.max_frame_bytes
        if len(data) > limit:
            return ServiceError(
                413,
                "frame_too_large",
                f"frame {frame_id} is {len(data)} bytes, the limit is {limit}; "
                "send smaller JPEGs (e.g. 640 px wide, quality 80)",
            )
        if image_format(data) is None:
            return ServiceError(
                422,
                "undecodable_image",
                f"frame {frame_id}: not a JPEG, PNG or WebP image ({len(data)} bytes, starting "
                f"{data[:8].hex()})",
            )
        size = image_size(data)
        max_side = self.settings.max_frame_side
        if size is not None and max(size[1:]) > max_side:
            fmt, w, h = size
            return ServiceError(
                413,
                "frame_too_large",
                f"frame {frame_id}: the {fmt} header says {w}x{h} pixels; the limit is {max_side} px "
                "per side (SKELACT_MAX_FRAME_SIDE): send frames of at most 1280 px",
            )
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
