"""WS /stream: frames in (binary JPEG/PNG or JSON skeleton frames), one JSON reply per processed frame.

A receiver task reads the socket continuously and keeps only the newest pending frame; the
processor takes it when it is free. When the client sends faster than the server keeps up,
stale frames are dropped (latest frame wins) and counted, so latency stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass, field

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from service.api.deps import StateDep
from service.errors import ServiceError, internal_message, report_internal
from service.lifecycle import GOING_AWAY, release_memory
from service.limits import StreamGuard
from service.schemas import ConfigMessage, ErrorMessage, HelloMessage, SkeletonFrameMessage
from service.state import ServiceState
from service.streaming import Arrival, StreamSession
from service.video import DecodeError

router = APIRouter(tags=["stream"])
log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455 / IANA)
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
NORMAL_CLOSURE = 1000
# config messages waiting for the processor; older ones are dropped (each re-sends hello anyway)
MAX_PENDING_CONFIGS = 4


@dataclass
class _Inbox:
    """Latest-frame-wins mailbox between the receiver and the processor."""

    pending: Arrival | None = None
    configs: list[ConfigMessage] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    shutdown: bool = False  # the server is going down: finish the current frame, then close 1001
    idle: bool = False  # the client sent nothing for stream_idle_timeout_s
    received: int = 0
    processed: int = 0
    dropped: int = 0


# A stream runs its frames one at a time (solo, or on its first lane) while that leaves the cores
# idle most of the time: pose time < this share of the frame interval. Beyond it a frame would
# wait for the one before it, and two single-threaded frames at once (the lanes) keep up better,
# e.g. at 30 fps on two cores. Below it no second lane is used: its estimator would have to be
# built mid-stream, and a graph build holds the GIL (`ServiceState.refill_spares`).
MAX_BUSY_ONE_AT_A_TIME = 0.7
# Solo frames are only worth it while faster than single-threaded ones: with other busy processes
# on the cores, XNNPACK's waiting threads spin and a solo frame takes 1.7x a single-threaded one
# (p95 6x). So every this-many frames one runs the other way, to compare; as one probe frame is a
# noisy sample (frames differ by 1.5x in cost), solo ends only when this much slower.
SOLO_PROBE_EVERY = 50
SOLO_GIVE_UP_RATIO = 1.4
_SOLO_WEIGHT = 0.1  # of the newest sample in the moving averages
_SINGLE_WEIGHT = 0.25  # single-threaded frames are rare while solo: each counts more


@dataclass
class _Pace:
    """A stream's frame interval and decode + pose times (solo and single-threaded), as moving
    averages: whether its next frame should pose solo."""

    interval_s: float | None = None
    solo_s: float | None = None
    single_s: float | None = None
    since_single: int = 0  # solo frames since the last single-threaded one
    since_solo: int = 0  # single-threaded frames since the last solo one
    _last_arrival: float | None = None

    def arrived(self, at: float) -> None:
        if self._last_arrival is not None:
            self.interval_s = _moving_average(self.interval_s, at - self._last_arrival, _SOLO_WEIGHT)
        self._last_arrival = at

    def posed(self, seconds: float, solo: bool) -> None:
        if solo:
            self.solo_s = _moving_average(self.solo_s, seconds, _SOLO_WEIGHT)
            self.since_single, self.since_solo = self.since_single + 1, 0
        else:
            self.single_s = _moving_average(self.single_s, seconds, _SINGLE_WEIGHT)
            self.since_single, self.since_solo = 0, self.since_solo + 1

    def busy(self) -> bool:
        """Too fast a stream for one frame at a time (`MAX_BUSY_ONE_AT_A_TIME`); False until
        measured."""
        known = [t for t in (self.solo_s, self.single_s) if t is not None]
        if self.interval_s is None or not known:
            return False
        return min(known) >= MAX_BUSY_ONE_AT_A_TIME * self.interval_s

    def wants_solo(self) -> bool:
        """Solo from the first frame; single-threaded while too fast a stream for one frame at a
        time, and while solo frames are clearly slower (SOLO_GIVE_UP_RATIO); each way probed now
        and then."""
        if self.busy():
            return False
        solo, single = self.solo_s, self.single_s
        if solo is not None and single is not None and solo >= SOLO_GIVE_UP_RATIO * single:
            return self.since_solo >= SOLO_PROBE_EVERY
        return self.since_single < SOLO_PROBE_EVERY


def _moving_average(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else average + weight * (sample - average)


class _Lanes:
    """Pose lanes of one stream (lane 0 is the stream's own estimator, the others extra ones)."""

    def __init__(self, count: int) -> None:
        self.free = list(range(count))
        self.freed = asyncio.Event()

    async def take(self, extra: bool) -> int:
        """The lowest free lane; lanes above 0 only when ``extra``."""
        while True:
            usable = [lane for lane in self.free if extra or lane == 0]
            if usable:
                self.free.remove(min(usable))
                return min(usable)
            self.freed.clear()
            await self.freed.wait()

    def give_back(self, lane: int) -> None:
        self.free.append(lane)
        self.freed.set()


class _Connection:
    def __init__(self, ws: WebSocket, state: ServiceState, session: StreamSession) -> None:
        self.ws = ws
        self.state = state
        self.session = session
        self.inbox = _Inbox()
        self.pace = _Pace()
        self.guard = StreamGuard(state.settings)
        self._send_lock = asyncio.Lock()

    def stop(self) -> None:
        """Shutdown (service.lifecycle): end after the frame in progress; the route closes with 1001."""
        self.inbox.shutdown = True
        self.inbox.wake.set()

    async def send(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def error(self, code: str, message: str) -> None:
        await self.send(ErrorMessage(code=code, message=message).model_dump_json())

    async def hello(self) -> None:
        m = self.session.model
        await self.send(
            HelloMessage(
                model=m.name,
                labels=m.labels,
                provider=m.runtime.provider,
                window=m.window_info(self.session.stride),
            ).model_dump_json()
        )

    def _drop(self) -> None:
        self.inbox.dropped += 1
        self.state.metrics.frames_dropped.inc()

    def _offer(self, arrival: Arrival) -> None:
        box = self.inbox
        if box.pending is not None:
            self._drop()
        box.pending = arrival
        box.wake.set()

    async def receive_loop(self) -> None:
        box = self.inbox
        guard = self.guard
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(self.ws.receive(), self.state.settings.stream_idle_timeout_s)
                except TimeoutError:
                    box.idle = True
                    break
                if msg["type"] == "websocket.disconnect":
                    break
                now = time.perf_counter()
                data = msg.get("bytes")
                text = msg.get("text")
                over_rate = guard.over_rate(now)  # checked before anything costs (service.limits)
                if data is not None:
                    frame_id = box.received
                    box.received += 1
                    self.state.metrics.frames_received.labels(source="stream").inc()
                    if over_rate is not None:
                        self._drop()
                        if guard.should_report(now):
                            await self.error(*over_rate)
                        continue
                    bad = guard.check_frame(data, frame_id)
                    if bad is not None:
                        await self.error(*bad)
                        continue
                    self.pace.arrived(now)
                    self._offer(Arrival(frame_id, now, image=data))
                elif text is not None:
                    bad = over_rate or guard.check_text(text)
                    if bad is not None:
                        if over_rate is None or guard.should_report(now):
                            await self.error(*bad)
                        continue
                    await self._on_text(text, now)
        except WebSocketDisconnect:
            pass
        finally:
            box.closed = True
            box.wake.set()

    async def _on_text(self, text: str, now: float) -> None:
        box = self.inbox
        try:
            raw = json.loads(text)
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind == "config":
                box.configs.append(ConfigMessage.model_validate(raw))
                del box.configs[:-MAX_PENDING_CONFIGS]
                box.wake.set()
            elif kind == "skeleton":
                sk = SkeletonFrameMessage.model_validate(raw)
                frame_id = box.received
                box.received += 1
                self.state.metrics.frames_received.labels(source="stream").inc()
                self._offer(Arrival(frame_id, now, skeleton=sk))
            else:
                await self.error(
                    "unknown_message",
                    f"unknown message type {kind!r}; send binary JPEG/PNG "
                    "frames, or JSON with type 'skeleton' or 'config'",
                )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            await self.error("invalid_message", f"{where}: {first['msg']}")
        except RecursionError:
            await self.error("invalid_json", "text messages must be JSON: nested too deeply")
        except ValueError as exc:  # JSONDecodeError, or e.g. an integer with too many digits
            await self.error("invalid_json", f"text messages must be JSON: {exc}")

    async def process_loop(self) -> None:
        """Take the newest frame whenever a pose lane and a pose worker are free.

        Up to ``session.lanes`` frames of this stream are in pose at once (a stream beside fewer
        streams than pose workers uses several cores); each frame then waits for the one before
        it, so tracking, windows and replies stay in order. The pose slot is taken *before* the
        frame: while the server is busy, newer frames replace the pending one instead of queueing
        behind it. A stream that is the server's only pose work (`ServiceState.stream_is_alone`)
        takes every slot and runs one frame at a time on all cores (lower latency per frame).
        """
        box = self.inbox
        lanes = _Lanes(self.session.lanes)
        workers = self.state.settings.pose_workers
        previous: asyncio.Task[bool] | None = None
        try:
            while True:
                await box.wake.wait()
                box.wake.clear()
                if box.shutdown or (previous is not None and previous.done() and not previous.result()):
                    return
                if box.configs:
                    if previous is not None and not await previous:  # switch between frames
                        return
                    while box.configs:
                        await self._apply_config(box.configs.pop(0))
                if box.pending is None:
                    if box.closed:
                        return
                    continue
                # more lanes only while fewer streams than pose workers are open (with more, the
                # cores are busy anyway and every extra lane would hold another estimator in
                # memory), and only for a stream too fast for one frame at a time
                lane = await lanes.take(self.state.streams < workers and self.pace.busy())
                solo = self._may_pose_solo() and self.session.solo_ready()
                slots = workers if solo else 1
                await self.state.pose_slots.take(slots)
                if solo and not self._may_pose_solo():  # a clip or another stream came while we waited
                    self.state.pose_slots.give(slots - 1)
                    solo, slots = False, 1
                if box.pending is None or box.shutdown:  # taken by nobody: look at the inbox again
                    self.state.pose_slots.give(slots)
                    lanes.give_back(lane)
                    box.wake.set()
                    continue
                arrival, box.pending = box.pending, None
                ts = self.session.stamp(arrival)
                previous = asyncio.ensure_future(self._frame(arrival, ts, lane, lanes, previous, slots, solo))
                previous.add_done_callback(lambda _: box.wake.set())  # a failed frame ends the loop
                box.wake.set()  # another lane may take the next frame at once
        finally:
            if previous is not None:  # finish (and reply to) the frames in flight
                await asyncio.gather(previous, return_exceptions=True)

    async def _frame(
        self,
        arrival: Arrival,
        ts: float,
        lane: int,
        lanes: _Lanes,
        before: asyncio.Task[bool] | None,
        slots: int = 1,
        solo: bool = False,
    ) -> bool:
        """One frame: pose on its lane (or alone on every core), then (after the frame before)
        the rest. False: end the stream."""
        box = self.inbox
        t_start = time.perf_counter()
        posed = None
        failure: BaseException | None = None
        try:
            posed = await self.session.pose(arrival, ts, lane, solo)
            if posed is not None:
                self.pace.posed(posed.decode_s + posed.pose_s, solo)
        except Exception as exc:  # reported in order, below
            failure = exc
        finally:
            self.state.pose_slots.give(slots)
            if solo:
                self.state.metrics.solo_frames.inc()
            lanes.give_back(lane)
            box.wake.set()
        if before is not None and not await before:
            return False
        try:
            if failure is not None:
                raise failure
            counters = (box.received, box.processed + 1, box.dropped)
            reply = await self.session.finish(arrival, ts, posed, counters, t_start)
            box.processed += 1
            await self.send(reply.model_dump_json())
        except DecodeError as exc:
            await self.error("undecodable_image", f"frame {arrival.frame_id}: {exc.reason}")
        except ServiceError as exc:
            await self.error(
                exc.code,
                f"frame {arrival.frame_id}: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""),
            )
            if not exc.recoverable:
                return False
        except WebSocketDisconnect:
            return False
        except Exception as exc:  # one bad frame must not end the stream
            if box.closed:
                return False
            error_id = report_internal(exc, f"WS /stream frame {arrival.frame_id}")
            try:
                why = internal_message(error_id)
                await self.error("internal_error", f"frame {arrival.frame_id}: {why}")
            except Exception:
                return False
        return True

    def _may_pose_solo(self) -> bool:
        """This stream is the server's only pose work, its next frame is an image and its pace
        says solo (`_Pace.wants_solo`)."""
        pending = self.inbox.pending
        if pending is None or pending.image is None or not self.pace.wants_solo():
            return False
        return self.state.stream_is_alone()

    async def _apply_config(self, cfg: ConfigMessage) -> None:
        if cfg.model is None or cfg.model == self.session.model.name:
            await self.hello()
            return
        try:
            model = self.state.registry.get(cfg.model)
        except ServiceError as exc:
            await self.error(exc.code, f"{exc.message} ({exc.hint})")
            return
        self.session.switch_model(model)
        await self.hello()


@router.websocket("/stream")
async def stream(
    websocket: WebSocket,
    state: StateDep,
    model: str | None = None,
    stride: int | None = None,
    top_k: int | None = None,
) -> None:
    """See docs/api.md for the message schema (service/schemas.py: HelloMessage, FrameMessage...)."""
    await websocket.accept()

    async def refuse(code: str, message: str, close_code: int) -> None:
        await websocket.send_text(ErrorMessage(code=code, message=message).model_dump_json())
        await websocket.close(close_code)

    if state.lifecycle.draining:
        await refuse("shutting_down", "the server is shutting down; reconnect shortly", GOING_AWAY)
        return
    if not state.ready:
        await refuse("not_ready", state.not_ready_reason() or "warming up; retry shortly", TRY_AGAIN_LATER)
        return
    if state.streams >= state.settings.max_streams:
        await refuse(
            "too_many_streams", f"{state.streams} streams are open (SKELACT_MAX_STREAMS)", TRY_AGAIN_LATER
        )
        return
    if (stride is not None and stride < 1) or (top_k is not None and top_k < 1):
        await refuse("invalid_request", "stride and top_k must be positive integers", POLICY_VIOLATION)
        return
    try:
        loaded = state.registry.get(model)
    except ServiceError as exc:
        await refuse(exc.code, f"{exc.message} ({exc.hint})", POLICY_VIOLATION)
        return
    solo = state.settings.solo_threads
    session = StreamSession(
        loaded,
        state.settings,
        state.pose_pool,
        state.metrics,
        stride,
        top_k,
        state.take_pose_stage,
        functools.partial(state.take_pose_stage, solo) if solo > 1 else None,
    )
    state.streams += 1
    state.metrics.active_streams.inc()
    conn = _Connection(websocket, state, session)
    state.lifecycle.add(conn)  # shutdown drains it (close 1001)
    receiver: asyncio.Task[None] | None = None
    try:
        await state.wait_for_refill()
        await session.open()
        if state.stream_is_alone():
            await session.open_solo()
        await conn.hello()
        receiver = asyncio.create_task(conn.receive_loop())
        await conn.process_loop()
        if conn.inbox.shutdown:
            await _close(conn, "shutting_down", "the server is shutting down; reconnect shortly", GOING_AWAY)
        elif conn.inbox.idle:
            idle = state.settings.stream_idle_timeout_s
            await _close(
                conn, "idle_timeout", f"nothing received for {idle:g} s (SKELACT_STREAM_IDLE_TIMEOUT_S)"
            )
    except WebSocketDisconnect:
        pass
    except Exception as exc:
        error_id = report_internal(exc, "WS /stream")
        with contextlib.suppress(Exception):
            await conn.error("internal_error", internal_message(error_id))
            await websocket.close(1011)
    finally:
        state.lifecycle.discard(conn)
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
        state.streams -= 1
        state.metrics.active_streams.dec()
        state.refill_spares()  # when that was the last stream: build spares now, stalling no one
        await session.close()
        with contextlib.suppress(RuntimeError):  # the pool is gone when the server has stopped
            # the estimator's graph was just freed: hand its pages back (service.lifecycle)
            await asyncio.get_running_loop().run_in_executor(state.io_pool, release_memory)


async def _close(conn: _Connection, code: str, message: str, close_code: int = NORMAL_CLOSURE) -> None:
    """Tell the client why, then close (it may have gone already)."""
    with contextlib.suppress(Exception):
        await conn.error(code, message)
        await conn.ws.close(close_code, reason=message[:120])
