"""Video and image decoding (OpenCV) into RGB uint8 frames with timestamps.

Frames are yielded one at a time so a long video is never held in memory whole. Every
failure (missing, empty, undecodable, truncated input) raises a `DecodeError` subclass with a
reason a person can act on, so the API can answer 4xx instead of crashing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v")
_DEFAULT_FPS = 30.0
# A file is "truncated" when it yields fewer frames than the container declares, beyond this slack
# (some containers only estimate their frame count from duration x fps).
_TRUNCATION_TOLERANCE = 0.9


class DecodeError(ValueError):
    """Input media could not be decoded; ``reason`` is a short human explanation."""

    def __init__(self, reason: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


class VideoDecodeError(DecodeError):
    """A video file is missing, empty, not a video, or truncated."""


class ImageDecodeError(DecodeError):
    """Bytes are not a decodable JPEG/PNG (or other OpenCV-readable) image."""


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """Container metadata. ``frame_count`` is what the container declares (may be an estimate)."""

    path: str
    fps: float
    frame_count: int
    width: int
    height: int
    duration_s: float
    codec: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: RGB uint8 (H, W, 3), possibly downscaled (``scale`` = out / source)."""

    index: int
    timestamp_s: float
    rgb: np.ndarray
    scale: float = 1.0

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _fourcc_to_str(code: float) -> str:
    value = int(code)
    if value <= 0:
        return ""
    chars = bytes((value >> (8 * i)) & 0xFF for i in range(4))
    return chars.decode("ascii", errors="replace").strip("\x00 ").lower()


def _open(path: str | os.PathLike[str]) -> tuple[cv2.VideoCapture, ContainerInfo]:
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError("file does not exist", str(p))
    if not p.is_file():
        raise VideoDecodeError("not a regular file", str(p))
    if p.stat().st_size == 0:
        raise VideoDecodeError("file is empty (0 bytes)", str(p))
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoDecodeError(
            "not a readable video (unknown container or codec, or a corrupt or truncated file)", str(p)
        )
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    count = max(count, 0)
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    duration = count / fps if fps > 0 and count > 0 else 0.0
    info = ContainerInfo(
        str(p), fps, count, width, height, duration, _fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC))
    )
    return cap, info


def probe_video(path: str | os.PathLike[str]) -> ContainerInfo:
    """Container metadata without decoding frames; raises `VideoDecodeError` if unreadable."""
    cap, info = _open(path)
    cap.release()
    return info


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the longer side is at most ``max_side`` (never upscales); returns (image, scale)."""
    if not max_side:
        return rgb, 1.0
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return rgb, 1.0
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


class VideoReader:
    """Iterate a video's frames lazily; use as a context manager to release the decoder early.

    Timestamps come from the container's presentation times when they increase, else from
    index / fps (fps defaults to 30 when the container declares none, e.g. some WebM files).
    With ``allow_truncated=False`` a file that ends well before its declared frame count
    raises `VideoDecodeError` after the frames it did decode.
    """

    def __init__(
        self, path: str | os.PathLike[str], max_side: int | None = None, allow_truncated: bool = False
    ) -> None:
        self._cap, self.info = _open(path)
        self.max_side = max_side
        self.allow_truncated = allow_truncated
        self.frames_read = 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cap.release()

    def __iter__(self) -> Iterator[Frame]:
        fps = self.info.fps or _DEFAULT_FPS
        last_t = -math.inf
        index = 0
        try:
            while True:
                ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    break
                pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
                t = pos_ms / 1000.0 if math.isfinite(pos_ms) and pos_ms >= 0 else index / fps
                if t <= last_t:  # missing or repeated pts: fall back to the frame clock
                    t = max(index / fps, last_t + 1.0 / fps)
                last_t = t
                rgb, scale = resize_max_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.max_side)
                yield Frame(index, t, np.ascontiguousarray(rgb), scale)
                index += 1
        finally:
            self.frames_read = index
            self.close()
        if index == 0:
            raise VideoDecodeError("no decodable frames (empty or corrupt stream)", self.info.path)
        declared = self.info.frame_count
        if not self.allow_truncated and declared > 0 and index < _TRUNCATION_TOLERANCE * declared - 1:
            raise VideoDecodeError(
                f"truncated: decoded {index} of {declared} declared frames", self.info.path
            )


def decode_image(data: bytes, max_side: int | None = None) -> np.ndarray:
    """Decode JPEG/PNG (or any OpenCV-readable) bytes into an RGB uint8 (H, W, 3) array."""
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)")
    buf = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(f"not a decodable image ({len(data)} bytes; expected JPEG or PNG)")
    rgb, _ = resize_max_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side)
    return np.ascontiguousarray(rgb)
