"""When a stream's next frame is taken, and how it poses: the one place a stream's pose is scheduled.

The scheduler takes the newest frame from the inbox whenever a pose lane and a pose slot are free.
Up to ``session.lanes`` frames of a stream are in pose at once (a stream beside fewer streams than
pose workers uses several cores); each frame then waits for the one before it, so tracking,
windows and replies stay in order. The pose slot is taken *before* the frame: while the server is
busy, newer frames replace the pending one instead of queueing behind it. A stream that is the
server's only pose work (`PosePool.stream_is_alone`) takes every slot and runs one frame at a time
on all cores (lower latency per frame), while its `Pace` says that pays and no other process keeps
the cores busy (`service.outside_load`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from perception.video import DecodeError
from service.action_set_schemas import EnrolledMessage, EnrolMessage
from service.action_sets import SET_PREFIX
from service.core.errors import ServiceError, internal_message, report_internal
from service.frames import PosedFrame
from service.pose_pool import PosePool
from service.registry import LoadedModel
from service.schemas import ConfigMessage, ErrorMessage, FrameMessage, HelloMessage
from service.streams.inbox import Arrival, Inbox
from service.streams.pacing import Lanes, Pace
from service.streams.session import FrameExpired, StreamSession

__all__ = ["FrameScheduler", "Send", "StreamClosed"]

Send = Callable[[FrameMessage | HelloMessage | ErrorMessage | EnrolledMessage], Awaitable[None]]
ModelLookup = Callable[[str | None, float | None], LoadedModel]
Enrol = Callable[[StreamSession, EnrolMessage], Awaitable[EnrolledMessage]]


class StreamClosed(Exception):
    """What ``send`` raises once the client has gone: the stream ends quietly."""


class FrameScheduler:
    """Runs one stream's frames from its inbox to its replies (``send``)."""

    def __init__(
        self,
        session: StreamSession,
        inbox: Inbox,
        pose: PosePool,
        models: ModelLookup,
        send: Send,
        unknown_threshold: float | None = None,
        enrol: Enrol | None = None,
    ) -> None:
        self.session = session
        self.inbox = inbox
        self.pose = pose
        self.models = models  # (name, unknown threshold) -> model (`ServiceState.model`)
        self.unknown_threshold = unknown_threshold
        self.enrol = enrol  # an example from this stream's recent seconds (`service.enrol.from_stream`)
        self.send = send
        self.pace = Pace()

    async def error(self, code: str, message: str) -> None:
        await self.send(ErrorMessage(code=code, message=message))

    async def run(self) -> None:
        """Until the client leaves, the server shuts down, or a frame fails beyond recovery."""
        box = self.inbox
        lanes = Lanes(self.session.lanes)
        workers = self.session.settings.pose_workers
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
                lane = await lanes.take(self.pose.lifecycle.streams < workers and self.pace.busy())
                solo = self._may_pose_solo() and self.session.solo_ready()
                slots = workers if solo else 1
                await self.pose.slots.take(slots)
                if solo and not self._may_pose_solo():  # a clip or another stream came while we waited
                    self.pose.slots.give(slots - 1)
                    solo, slots = False, 1
                if box.pending is None or box.shutdown:  # taken by nobody: look at the inbox again
                    self.pose.slots.give(slots)
                    lanes.give_back(lane)
                    box.wake.set()
                    continue
                arrival, box.pending = box.pending, None
                box.working += 1
                ts = self.session.stamp(arrival)
                previous = asyncio.ensure_future(self._frame(arrival, ts, lane, lanes, previous, slots, solo))
                previous.add_done_callback(self._frame_done)  # a failed frame ends the loop
                box.wake.set()  # another lane may take the next frame at once
        finally:
            if previous is not None:  # finish (and reply to) the frames in flight
                await asyncio.gather(previous, return_exceptions=True)

    def _frame_done(self, _: asyncio.Task[bool]) -> None:
        self.inbox.answered()

    async def _frame(
        self,
        arrival: Arrival,
        ts: float,
        lane: int,
        lanes: Lanes,
        before: asyncio.Task[bool] | None,
        slots: int = 1,
        solo: bool = False,
    ) -> bool:
        """One frame: pose on its lane (or alone on every core), then (after the frame before)
        the rest. False: end the stream."""
        box = self.inbox
        t_start = time.perf_counter()
        posed: PosedFrame | None = None
        failure: BaseException | None = None
        try:
            posed = await self.session.pose(arrival, ts, lane, solo)
            if arrival.image is not None:
                self.pace.posed(posed.decode_s + posed.pose_s, solo)
        except Exception as exc:  # reported in order, below
            failure = exc
        finally:
            self.pose.slots.give(slots)
            if solo:
                self.pose.metrics.solo_frames.inc()
            lanes.give_back(lane)
            box.wake.set()
        if before is not None and not await before:
            return False
        try:
            if failure is not None:
                raise failure
            assert posed is not None
            counters = (box.received, box.processed + 1, box.dropped)
            reply = await self.session.reply(arrival, posed, counters, t_start)
            box.processed += 1
            await self.send(reply)
        except DecodeError as exc:
            await self.error("undecodable_image", f"frame {arrival.frame_id}: {exc.reason}")
        except FrameExpired as exc:  # dropped like a frame a newer one replaced, and said
            box.drop()
            self.pose.metrics.frames_expired.inc()
            await self.error(exc.code, exc.ws_message())
        except ServiceError as exc:
            await self.error(exc.code, exc.ws_message(f"frame {arrival.frame_id}: "))
            if not exc.recoverable:
                return False
        except StreamClosed:
            return False
        except Exception as exc:  # one bad frame must not end the stream
            if box.closed:
                return False
            error_id = report_internal(exc, f"WS /stream frame {arrival.frame_id}")
            try:
                await self.error("internal_error", f"frame {arrival.frame_id}: {internal_message(error_id)}")
            except Exception:
                return False
        return True

    async def _enrol(self, msg: EnrolMessage) -> None:
        """Add the example; a stream running that set goes on with the new prototypes (a new hello)."""
        if self.enrol is None:
            await self.error("invalid_message", "this server does not enrol from streams")
            return
        try:
            await self.send(await self.enrol(self.session, msg))
            if self.session.model.name == SET_PREFIX + msg.action_set:
                self.session.configure(self.models(self.session.model.name, self.unknown_threshold), None)
                await self.send(self.session.hello())
        except ServiceError as exc:
            await self.error(exc.code, exc.ws_message())

    def _may_pose_solo(self) -> bool:
        """This stream is the server's only pose work, its next frame is an image, its pace says
        solo (`Pace.wants_solo`) and no other process keeps the cores busy (`OutsideLoad`)."""
        pending = self.inbox.pending
        if pending is None or pending.image is None or not self.pace.wants_solo():
            return False
        return self.pose.stream_is_alone() and self.pose.outside.allows_solo()

    async def _apply_config(self, cfg: ConfigMessage | EnrolMessage) -> None:
        if isinstance(cfg, EnrolMessage):
            await self._enrol(cfg)
            return
        model = self.session.model
        overrides = None if cfg.fall_rule is None else cfg.fall_rule.model_dump(exclude_none=True)
        new_threshold = "unknown_threshold" in cfg.model_fields_set
        threshold = cfg.unknown_threshold if new_threshold else self.unknown_threshold
        # naming an action set again picks up its latest examples
        named = cfg.model is not None and (cfg.model != model.name or cfg.model.startswith(SET_PREFIX))
        try:
            if named or new_threshold:
                model = self.models(cfg.model or model.name, threshold)
            if model is not self.session.model or overrides is not None:
                self.session.configure(model, overrides)
        except ServiceError as exc:
            await self.error(exc.code, exc.ws_message())
            return
        self.unknown_threshold = threshold
        await self.send(self.session.hello())
