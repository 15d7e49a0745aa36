"""Annotated video of a clip: skeletons, track boxes and the current label drawn on every frame.

WebM/VP8 is the default (browsers play it inline and OpenCV's wheel can encode it); a path
ending in ``.mp4`` gets MPEG-4 Part 2 (plays in VLC/ffplay, not in every browser).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.tracking.tracker import TrackedPerson
from perception.video import VideoReader
from service.schemas import RecognizeResponse, Segment
from service.wire import box_corners, landmarks_with_visibility
from skeleton.layouts import MEDIAPIPE_33

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]


@dataclass(frozen=True, slots=True)
class OverlayPerson:
    track_id: int
    landmarks: np.ndarray  # (33, 3): x, y pixels, visibility
    box: tuple[float, float, float, float]
    caption: str
    primary: bool = False


def colour(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[track_id % len(_PALETTE)]


def draw(rgb: np.ndarray, people: list[OverlayPerson], header: str = "", min_vis: float = 0.3) -> np.ndarray:
    """Return a copy of ``rgb`` with the people drawn on it."""
    out = rgb.copy()
    scale = max(out.shape[:2]) / 640.0
    thick = max(1, round(2 * scale))
    for p in people:
        c = colour(p.track_id)
        pts = p.landmarks
        for a, b in MEDIAPIPE_33.edges:
            if pts[a, 2] >= min_vis and pts[b, 2] >= min_vis:
                cv2.line(
                    out,
                    (int(pts[a, 0]), int(pts[a, 1])),
                    (int(pts[b, 0]), int(pts[b, 1])),
                    c,
                    thick,
                    cv2.LINE_AA,
                )
        for x, y, v in pts:
            if v >= min_vis:
                cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        x0, y0, x1, y1 = (int(v) for v in p.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), c, thick + (1 if p.primary else 0))
        _label(out, p.caption, (x0, max(0, y0 - 4)), c, scale)
    if header:
        _label(out, header, (4, 4), (40, 40, 40), scale, below=True)
    return out


def _label(
    img: np.ndarray,
    text: str,
    at: tuple[int, int],
    bg: tuple[int, int, int],
    scale: float,
    below: bool = False,
) -> None:
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    (w, h), base = cv2.getTextSize(text, font, fs, 1)
    x, y = at
    top = y if below else y - h - base
    top = max(0, top)
    cv2.rectangle(img, (x, top), (x + w + 4, top + h + base + 2), bg, -1)
    cv2.putText(img, text, (x + 2, top + h + 1), font, fs, (255, 255, 255), 1, cv2.LINE_AA)


class OverlayWriter:
    """Write RGB frames to a video file; the codec follows the file's suffix."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        fourcc = "VP80" if path.suffix.lower() == ".webm" else "mp4v"
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), max(fps, 1.0), size)
        if not self._writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
        self.size = size

    def write(self, rgb: np.ndarray) -> None:
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


def _label_at(segments: list[Segment], t: float) -> tuple[str, float] | None:
    for sg in segments:
        if sg.start <= t <= sg.end:
            return sg.label, sg.confidence
    return None


def render_overlay(
    video: Path,
    out: Path,
    frame_people: list[tuple[float, tuple[TrackedPerson, ...]]],
    response: RecognizeResponse,
    max_side: int | None = None,
) -> None:
    """Decode the video again and draw every frame's people with their label at that time."""
    segs = {t.track_id: t.segments for t in response.tracks}
    person = {m: t.track_id for t in response.tracks for m in (t.members or [t.track_id])}
    primary = response.primary_track_id
    reader = VideoReader(video, max_side=max_side, allow_truncated=True)
    writer: OverlayWriter | None = None
    try:
        for frame, (_, people) in zip(reader, frame_people, strict=False):
            if writer is None:
                writer = OverlayWriter(out, reader.info.fps or 25.0, (frame.width, frame.height))
            drawn = []
            for p in people:
                tid = person.get(p.track_id)
                if tid is None:
                    continue
                hit = _label_at(segs[tid], frame.timestamp_s)
                caption = f"#{tid} " + (f"{hit[0]} {hit[1]:.2f}" if hit else "…")
                lm = landmarks_with_visibility(p.pose)
                drawn.append(OverlayPerson(tid, lm, box_corners(p.pose), caption, tid == primary))
            header = f"{response.model}  t={frame.timestamp_s:5.2f}s"
            if response.clip is not None:
                header += f"  clip: {response.clip.label}"
            writer.write(draw(frame.rgb, drawn, header))
    finally:
        reader.close()
        if writer is not None:
            writer.close()
