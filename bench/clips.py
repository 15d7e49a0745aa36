"""Real clips for the benchmarks: where they are, trimmed copies, JPEG frames encoded once up front."""

from __future__ import annotations

from pathlib import Path

import cv2

from skeleton.paths import data_root

# A short clip with one actor (picking up an object, ~7 s at 18 fps, 640x480) for POST /recognize,
# and a long one (walking, ~45 s) so that 10 s at 30 fps never repeats a frame.
PIPELINE_CLIP = "upfall/Activity9/Trial1Cam1.mp4"
STREAM_CLIP = "upfall/Activity6/Trial1Cam1.mp4"


def resolve_clip(name: str | Path) -> Path:
    """An absolute path, or a path relative to the data root; a clear error when it is missing."""
    path = Path(name)
    if not path.is_absolute():
        path = data_root() / path
    if not path.is_file():
        raise FileNotFoundError(f"clip {path} not found (set SKELACT_DATA_DIR to the real data)")
    return path


def clip_info(path: Path) -> dict[str, float | int | str]:
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    return {
        "path": str(path),
        "name": _short_name(path),
        "fps": round(fps, 3),
        "frames": frames,
        "width": width,
        "height": height,
        "duration_s": round(frames / fps, 3) if fps else 0.0,
    }


def _short_name(path: Path) -> str:
    try:
        return str(path.relative_to(data_root()))
    except ValueError:
        return path.name


def trim_clip(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src`` as an mp4 (same size and frame rate), for quick runs."""
    cap = cv2.VideoCapture(str(src))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    keep = max(1, round(seconds * fps))
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        while written < keep:
            ok, bgr = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = bgr.shape[:2]
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            writer.write(bgr)
            written += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if written == 0:
        raise ValueError(f"{src}: no decodable frames")
    return dst


def jpeg_frames(
    src: Path, count: int, quality: int = 80, start: int = 0, max_side: int | None = None
) -> list[bytes]:
    """``count`` JPEG-encoded frames of ``src`` from frame ``start`` (wrapping around at the end),
    shrunk to ``max_side`` pixels when given.

    Encoded once, before any timing starts, as a webcam client would send them.
    """
    cap = cv2.VideoCapture(str(src))
    frames: list[bytes] = []
    all_frames: list[bytes] = []
    try:
        index = 0
        while len(frames) < count:
            ok, bgr = cap.read()
            if not ok:
                if not all_frames:
                    raise ValueError(f"{src}: no decodable frames")
                frames.extend(all_frames[: count - len(frames)])  # wrap around
                continue
            scale = max_side / max(bgr.shape[:2]) if max_side else 1.0
            if scale < 1:
                size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError(f"{src}: frame {index} could not be JPEG-encoded")
            data = buf.tobytes()
            all_frames.append(data)
            if index >= start:
                frames.append(data)
            index += 1
    finally:
        cap.release()
    return frames[:count]
