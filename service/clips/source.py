"""A clip's frames: decoded video frames (checked against the limits first) or JSON skeletons,
pulled a few frames ahead of the pipeline on an I/O thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.video import VideoDecodeError, VideoReader, probe_video
from service.core.errors import ServiceError
from service.frames import PosedFrame
from service.schemas import VideoInfo

__all__ = ["ClipFrame", "ImageFrame", "VideoSource", "check_video", "prefetch", "undecodable"]


@dataclass(frozen=True, slots=True)
class ImageFrame:
    """A decoded video frame (RGB), before pose."""

    index: int
    timestamp: float
    width: int
    height: int
    rgb: np.ndarray
    decode_s: float = 0.0


ClipFrame = ImageFrame | PosedFrame  # a video frame to pose, or a frame of client skeletons


def too_long(what: str, max_seconds: float) -> ServiceError:
    return ServiceError(
        413,
        "video_too_long",
        f"{what}, the limit is {max_seconds:.0f} s",
        "cut the video or raise SKELACT_MAX_VIDEO_SECONDS",
    )


def undecodable(filename: str, exc: VideoDecodeError, hint: str) -> ServiceError:
    return ServiceError(422, "undecodable_video", f"{filename}: {exc.reason}", hint)


class VideoSource:
    """Decoded frames of a video file with per-frame decode time (iterated on an I/O thread)."""

    def __init__(
        self,
        path: Path,
        max_side: int | None = None,
        max_seconds: float | None = None,
        until_s: float | None = None,
    ) -> None:
        self.reader = VideoReader(path, max_side=max_side, allow_truncated=True)
        self._it = iter(self.reader)
        self.max_seconds = max_seconds  # containers may not declare (or may understate) their length
        self.until_s = until_s  # stop here (an example's end: later frames are not needed)

    def __iter__(self) -> Iterator[ImageFrame]:
        return self

    def __next__(self) -> ImageFrame:
        t0 = time.perf_counter()
        f = next(self._it)
        if self.until_s is not None and f.timestamp_s > self.until_s:
            raise StopIteration
        if self.max_seconds is not None and f.timestamp_s > self.max_seconds:
            raise too_long(f"the video runs past {self.max_seconds:.0f} s", self.max_seconds)
        return ImageFrame(f.index, f.timestamp_s, f.width, f.height, f.rgb, time.perf_counter() - t0)

    def close(self) -> None:
        self.reader.close()


def check_video(path: Path, filename: str, max_seconds: float, max_side: int | None = None) -> VideoInfo:
    """The container's metadata, refused (4xx) when unreadable, too long or too large to decode."""
    try:
        info = probe_video(path)
    except VideoDecodeError as exc:
        raise undecodable(
            filename, exc, "send an mp4/avi/webm/mov file that a video player can open"
        ) from None
    if info.duration_s > max_seconds:
        raise too_long(f"{filename} lasts {info.duration_s:.0f} s", max_seconds)
    if max_side is not None and max(info.width, info.height) > max_side:
        raise ServiceError(  # refused before a decoder allocates frames of that size
            413,
            "video_too_large",
            f"{filename} is {info.width}x{info.height} pixels, the limit is {max_side} px per side",
            "downscale the video (e.g. ffmpeg -vf scale=1280:-2) or raise SKELACT_MAX_FRAME_SIDE",
        )
    return VideoInfo(
        filename=filename,
        width=info.width,
        height=info.height,
        fps=round(info.fps, 3),
        frames=info.frame_count,
        duration_s=round(info.duration_s, 3),
    )


async def prefetch(
    source: Iterator[ClipFrame], executor: Executor, depth: int = 4
) -> AsyncIterator[ClipFrame]:
    """Pull frames from a blocking iterator on ``executor``, ``depth`` frames ahead of the consumer.

    The source is closed under the same lock as each pull: a cancelled request (a timeout) stops
    waiting for the pull in flight, and closing a video capture while a thread reads from it
    crashes the process (seen in the suite: a segfault in OpenCV's read).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ClipFrame | BaseException | None] = asyncio.Queue(maxsize=depth)
    sentinel = object()
    lock = threading.Lock()
    closed = False

    def pull() -> ClipFrame | object:
        with lock:
            return sentinel if closed else next(source, sentinel)

    def close_source() -> None:
        nonlocal closed
        with lock:
            closed = True
            close = getattr(source, "close", None)
            if close is not None:
                close()

    async def produce() -> None:
        try:
            while True:
                item = await loop.run_in_executor(executor, pull)
                if item is sentinel:
                    break
                assert isinstance(item, ImageFrame | PosedFrame)
                await queue.put(item)
        except BaseException as exc:  # hand decode errors to the consumer
            await queue.put(exc)
            return
        await queue.put(None)

    task = loop.create_task(produce())
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        await loop.run_in_executor(executor, close_source)
