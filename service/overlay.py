"""Annotated video of a clip: skeletons, track boxes and each person's label as of that frame.

Every frame shows what was known at its time: a person's label from the moment their first window
was classified (before that: "warming up" and how much of the window has been seen), a fall from
the moment it was detected; the whole-clip label, decided at the end, is never shown early.
Captions are measured and kept inside the frame. Frames are written at most ``MAX_SIDE`` pixels
on their longer side (720p): OpenCV's VP8 encoder is the slow part (~90 ms per 720p frame vs
~170-220 ms at 1080p here), and a browser shows the video smaller anyway.

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
from service.schemas import RecognizeResponse, TrackResult
from service.wire import box_corners, landmarks_with_visibility
from skeleton.layouts import MEDIAPIPE_33

MAX_SIDE = 1280  # longer side of the annotated video, pixels
_ROUNDING = 1e-3  # the response's times are rounded to 1e-4 s
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
    """Return a copy of ``rgb`` with the people drawn on it (landmarks and boxes in its pixels)."""
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
        _label(out, p.caption, (x0, y0 - 4), c, scale)
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
    """A caption on a filled box at ``at`` (above it, or below with ``below``), shrunk until it
    fits the frame's width and moved inside the frame."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    height, width = img.shape[:2]
    fs = 0.5 * scale
    (w, h), base = cv2.getTextSize(text, font, fs, 1)
    if w + 4 > width:
        fs *= (width - 4) / (w + 4)
        (w, h), base = cv2.getTextSize(text, font, fs, 1)
    box_w, box_h = w + 4, h + base + 2
    x = min(max(0, at[0]), max(0, width - box_w))
    top = at[1] if below else at[1] - box_h
    top = min(max(0, top), max(0, height - box_h))
    cv2.rectangle(img, (x, top), (x + box_w, top + box_h), bg, -1)
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


def caption_at(track: TrackResult, window_s: float, t: float) -> str:
    """A person's caption at time ``t``, as known then: nothing is decided before the track's
    first window ends (``skeleton.clip.window_ends``: one window after the first sighting, or the
    last sighting for a shorter track); a segment's label from then on."""
    decided = min(track.first_seen + window_s, track.last_seen)
    if t < decided - _ROUNDING:
        seen = (t - track.first_seen) / window_s if window_s > 0 else 1.0
        return f"#{track.track_id} warming up {min(max(seen, 0.0), 1.0):.0%}"
    for sg in track.segments:
        if sg.start - _ROUNDING <= t <= sg.end + _ROUNDING:
            return f"#{track.track_id} {sg.label} {sg.confidence:.2f}"
    return f"#{track.track_id} no confident action"


def header_at(response: RecognizeResponse, t: float) -> str:
    """The frame's header: model and time, and a fall once it has been detected (never the
    whole-clip label, which is known only at the end)."""
    text = f"{response.model}  t={t:5.2f}s"
    clip = response.clip
    if clip is not None and clip.fall and clip.fall_time is not None and t >= clip.fall_time - _ROUNDING:
        text += f"  FALL: {clip.label} at {clip.fall_time:.2f}s"
    return text


def render_overlay(
    video: Path,
    out: Path,
    frame_people: list[tuple[float, tuple[TrackedPerson, ...]]],
    response: RecognizeResponse,
    max_side: int | None = None,
) -> None:
    """Decode the video again and draw every frame's people with their label as of that frame."""
    tracks = {t.track_id: t for t in response.tracks}
    person = {m: t.track_id for t in response.tracks for m in (t.members or [t.track_id])}
    primary = response.primary_track_id
    window_s = response.window.seconds
    reader = VideoReader(video, max_side=max_side, allow_truncated=True)
    writer: OverlayWriter | None = None
    try:
        for frame, (_, people) in zip(reader, frame_people, strict=False):
            k = min(1.0, MAX_SIDE / max(frame.width, frame.height))
            size = (max(2, round(frame.width * k) // 2 * 2), max(2, round(frame.height * k) // 2 * 2))
            if writer is None:
                writer = OverlayWriter(out, reader.info.fps or 25.0, size)
            rgb = frame.rgb if k == 1.0 else cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
            sx, sy = size[0] / frame.width, size[1] / frame.height
            drawn = []
            for p in people:
                tid = person.get(p.track_id)
                if tid is None:
                    continue
                lm = landmarks_with_visibility(p.pose) * np.array([sx, sy, 1.0], np.float32)
                x0, y0, x1, y1 = box_corners(p.pose)
                box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
                caption = caption_at(tracks[tid], window_s, frame.timestamp_s)
                drawn.append(OverlayPerson(tid, lm, box, caption, tid == primary))
            writer.write(draw(rgb, drawn, header_at(response, frame.timestamp_s)))
    finally:
        reader.close()
        if writer is not None:
            writer.close()
