"""WS /stream: frames in (binary JPEG/PNG or JSON skeleton frames), one JSON reply per processed frame.

The route accepts or refuses the connection, reads and checks every message (`StreamGuard`, the
message schemas) into the stream's inbox, sends what the stream's scheduler replies, and closes.
What happens to a frame is `service.streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from service.action_set_schemas import EnrolledMessage, EnrolMessage
from service.api.deps import StateDep
from service.core.errors import CloseCode, ServiceError, internal_message, report_internal, validation_message
from service.core.limits import StreamGuard
from service.enrol import from_stream
from service.falls import rule_for
from service.schemas import (
    ConfigMessage,
    ErrorMessage,
    FallRuleQuery,
    FrameMessage,
    HelloMessage,
    SkeletonFrameMessage,
)
from service.state import ServiceState
from service.streams.clock import CaptureTimes
from service.streams.inbox import Arrival, Inbox
from service.streams.scheduler import FrameScheduler, StreamClosed
from service.streams.session import StreamSession

router = APIRouter(tags=["stream"])
log = logging.getLogger(__name__)


class _Connection:
    """One accepted socket: its inbox, filled by `receive_loop`, and serialised sends."""

    def __init__(self, ws: WebSocket, state: ServiceState) -> None:
        self.ws = ws
        self.state = state
        self.inbox = Inbox(state.metrics)
        self.guard = StreamGuard(state.settings)
        self.capture = CaptureTimes()
        self._send_lock = asyncio.Lock()

    def stop(self) -> None:
        """Shutdown (service.lifecycle): end after the frame in progress; the route closes with 1001."""
        self.inbox.stop()

    async def send(self, message: FrameMessage | HelloMessage | ErrorMessage | EnrolledMessage) -> None:
        async with self._send_lock:
            try:
                await self.ws.send_text(message.model_dump_json())
            except WebSocketDisconnect:
                raise StreamClosed from None

    async def error(self, code: str, message: str) -> None:
        await self.send(ErrorMessage(code=code, message=message))

    async def receive_loop(self, pace_arrived: Callable[[float], None]) -> None:
        """Read the socket until the client leaves or idles; ``pace_arrived``: a kept frame's time."""
        box = self.inbox
        guard = self.guard
        idle = False
        timeout = wait = self.state.settings.stream_idle_timeout_s
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(self.ws.receive(), wait)
                except TimeoutError:
                    # not idle while the client waits for our reply, nor sooner than the timeout after it
                    quiet = box.quiet_for(time.perf_counter())
                    if quiet < timeout:
                        wait = timeout - quiet
                        continue
                    idle = True
                    break
                wait = timeout
                if msg["type"] == "websocket.disconnect":
                    break
                now = time.perf_counter()
                data = msg.get("bytes")
                text = msg.get("text")
                over_rate = guard.over_rate(now)  # checked before anything costs (service.core.limits)
                if data is not None:
                    frame_id = box.next_frame_id()
                    if over_rate is not None:
                        box.drop()
                        if guard.should_report(now):
                            await self.error(over_rate.code, over_rate.ws_message())
                        continue
                    try:
                        capture_time, image = self.capture.split(data, frame_id)
                    except ServiceError as bad_time:
                        await self.error(bad_time.code, bad_time.ws_message())
                        continue
                    bad = guard.check_frame(image, frame_id)
                    if bad is not None:
                        await self.error(bad.code, bad.ws_message())
                        continue
                    pace_arrived(now)
                    box.offer(Arrival(frame_id, now, image=image, capture_time=capture_time))
                elif text is not None:
                    bad = over_rate or guard.check_text(text)
                    if bad is not None:
                        if over_rate is None or guard.should_report(now):
                            await self.error(bad.code, bad.ws_message())
                        continue
                    await self._on_text(text, now)
        except (WebSocketDisconnect, StreamClosed):
            pass
        finally:
            box.close(idle)

    async def _on_text(self, text: str, now: float) -> None:
        box = self.inbox
        try:
            raw = json.loads(text)
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind == "config":
                box.configure(ConfigMessage.model_validate(raw))
            elif kind == "enrol":
                box.configure(EnrolMessage.model_validate(raw))
            elif kind == "skeleton":
                sk = SkeletonFrameMessage.model_validate(raw)
                box.offer(Arrival(box.next_frame_id(), now, skeleton=sk))
            else:
                await self.error(
                    "unknown_message",
                    f"unknown message type {kind!r}; send binary JPEG/PNG "
                    "frames, or JSON with type 'skeleton', 'config' or 'enrol'",
                )
        except ValidationError as exc:
            await self.error("invalid_message", validation_message(exc.errors()))
        except RecursionError:
            await self.error("invalid_json", "text messages must be JSON: nested too deeply")
        except ValueError as exc:  # JSONDecodeError, or e.g. an integer with too many digits
            await self.error("invalid_json", f"text messages must be JSON: {exc}")

    async def close(self, code: str, message: str, close_code: int = CloseCode.NORMAL) -> None:
        """Tell the client why, then close (it may have gone already)."""
        with contextlib.suppress(Exception):
            await self.error(code, message)
            await self.ws.close(close_code, reason=message[:120])


def _refusal(state: ServiceState, stride: int | None, top_k: int | None) -> tuple[str, str, int] | None:
    """Why a connection is refused before it starts: (code, message, close code), or None."""
    if state.lifecycle.draining:
        return "shutting_down", "the server is shutting down; reconnect shortly", CloseCode.GOING_AWAY
    if not state.ready:
        reason = state.not_ready_reason() or "warming up; retry shortly"
        return "not_ready", reason, CloseCode.TRY_AGAIN_LATER
    if state.lifecycle.streams >= state.settings.max_streams:
        message = f"{state.lifecycle.streams} streams are open (SKELACT_MAX_STREAMS)"
        return "too_many_streams", message, CloseCode.TRY_AGAIN_LATER
    if (stride is not None and stride < 1) or (top_k is not None and top_k < 1):
        return "invalid_request", "stride and top_k must be positive integers", CloseCode.POLICY_VIOLATION
    return None


@router.websocket("/stream")
async def stream(
    websocket: WebSocket,
    state: StateDep,
    model: str | None = None,
    stride: int | None = None,
    top_k: int | None = None,
    unknown_threshold: float | None = None,
) -> None:
    """See docs/api.md for the message schema (service/schemas.py: HelloMessage, FrameMessage...)."""
    await websocket.accept()
    conn = _Connection(websocket, state)
    refused = _refusal(state, stride, top_k)
    if refused is None:
        try:
            loaded = state.model(model, unknown_threshold)
            falls = FallRuleQuery.model_validate(dict(websocket.query_params)).model_dump(exclude_none=True)
            rule_for(loaded.manifest, falls)  # checked here: a bad override refuses the stream
        except ValidationError as exc:
            refused = "invalid_request", validation_message(exc.errors()), CloseCode.POLICY_VIOLATION
        except ServiceError as exc:
            refused = exc.code, exc.ws_message(), CloseCode.POLICY_VIOLATION
    if refused is not None:
        code, message, close_code = refused
        await conn.error(code, message)
        await websocket.close(close_code)
        return
    session = StreamSession(loaded, state.settings, state.pose, state.metrics, stride, top_k, falls)
    enrol = functools.partial(from_stream, state)
    scheduler = FrameScheduler(
        session, conn.inbox, state.pose, state.model, conn.send, unknown_threshold, enrol
    )
    receiver: asyncio.Task[None] | None = None
    try:
        async with state.stream_open(conn):
            try:
                await state.pose.wait_for_refill()
                await session.open()
                if state.pose.stream_is_alone():
                    await session.open_solo()
                await conn.send(session.hello())
                receiver = asyncio.create_task(conn.receive_loop(scheduler.pace.arrived))
                await scheduler.run()
                if conn.inbox.shutdown:
                    message = "the server is shutting down; reconnect shortly"
                    await conn.close("shutting_down", message, CloseCode.GOING_AWAY)
                elif conn.inbox.idle:
                    idle = state.settings.stream_idle_timeout_s
                    message = f"nothing received for {idle:g} s (SKELACT_STREAM_IDLE_TIMEOUT_S)"
                    await conn.close("idle_timeout", message)
            finally:
                if receiver is not None:
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await receiver
    except (WebSocketDisconnect, StreamClosed):
        pass
    except Exception as exc:
        error_id = report_internal(exc, "WS /stream")
        with contextlib.suppress(Exception):
            await conn.error("internal_error", internal_message(error_id))
            await websocket.close(CloseCode.INTERNAL_ERROR)
    finally:
        await session.close()
        await state.release_memory()  # the estimators' graphs were just freed (service.memory)
