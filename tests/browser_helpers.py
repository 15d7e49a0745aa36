"""Helpers for the real-browser tests: a fake camera file, a live server subprocess, Chromium launch.

Kept free of pytest so that ``python -m tests.browser_helpers`` style scripts (the README screenshot)
can reuse them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from skeleton.paths import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")


def write_y4m(
    clip: Path,
    out: Path,
    size: tuple[int, int] = (320, 240),
    seconds: float = 4.0,
    fps: int = 15,
    crop_borders: bool = True,
    code_rows: int = 0,
) -> int:
    """Decode ``clip`` with OpenCV and write a YUV4MPEG2 4:2:0 file Chromium can use as a camera.

    Black letterbox bars baked into the clip are cropped (a camera has none), then frames are
    resampled to ``fps`` (by nearest source frame) and letterboxed into ``size`` (both even).
    With ``code_rows`` each frame gets that many rows more, below the picture, showing its index in
    the file (`code_band`), so a test can tell which camera frame a picture shows.
    Returns the number of frames written. Chromium loops the file.
    """
    width, height = size
    assert width % 2 == 0 and (height + code_rows) % 2 == 0, "4:2:0 needs even dimensions"
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise RuntimeError(f"cannot open {clip}")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or fps
    frames: list[np.ndarray] = []
    while len(frames) < int(seconds * src_fps) + 1:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {clip}")
    if crop_borders:
        y0, y1, x0, x1 = _content_box(frames)
        frames = [f[y0:y1, x0:x1] for f in frames]
    n_out = max(1, min(int(seconds * fps), int(len(frames) * fps / src_fps)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height + code_rows} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(n_out):
            src = frames[min(len(frames) - 1, round(i * src_fps / fps))]
            picture = _letterbox(src, width, height)
            if code_rows:
                picture = np.vstack([picture, code_band(i, width, code_rows)])
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420).tobytes())
    return n_out


CODE_BITS = 8  # frame codes repeat every 256 frames (17 s at 15 fps)


def code_band(index: int, width: int, rows: int) -> np.ndarray:
    """``rows`` x ``width`` BGR rows showing ``index`` (mod 256) as 8 black/white blocks, most
    significant bit left: big enough to survive JPEG and scaling."""
    bits = [(index >> (CODE_BITS - 1 - b)) & 1 for b in range(CODE_BITS)]
    cols = np.repeat(np.array(bits, np.uint8) * 255, -(-width // CODE_BITS))[:width]
    return np.repeat(np.repeat(cols[None, :, None], rows, axis=0), 3, axis=2)


def code_band_means(image: np.ndarray, band_fraction: float) -> list[float]:
    """Mean brightness of the middle of each code block in the bottom ``band_fraction`` of
    ``image`` (BGR or grey); `frame_code` reads them. The page-side twin is in test_browser.py."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    top = h - max(1, round(h * band_fraction))
    band = gray[top + (h - top) // 4 : h - (h - top) // 4]
    step = w / CODE_BITS
    return [float(band[:, int((b + 0.25) * step) : int((b + 0.75) * step)].mean()) for b in range(CODE_BITS)]


def frame_code(means: list[float]) -> int:
    """The frame index (mod 256) that `code_band` drew, from `code_band_means`."""
    return sum(1 << (CODE_BITS - 1 - b) for b, m in enumerate(means) if m > 128)


def _content_box(frames: list[np.ndarray], level: float = 16.0) -> tuple[int, int, int, int]:
    """Rows/columns that are not black bars over all frames: (y0, y1, x0, x1)."""
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[:: max(1, len(frames) // 20)]])
    rows = np.flatnonzero(gray.mean(axis=(0, 2)) > level)
    cols = np.flatnonzero(gray.mean(axis=(0, 1)) > level)
    if rows.size == 0 or cols.size == 0:
        return 0, gray.shape[1], 0, gray.shape[2]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _letterbox(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    canvas[y : y + nh, x : x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 (and ``"ready": true`` when the JSON body has that key),
    the process dies, or ``timeout`` seconds pass."""
    import httpx

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            r = httpx.get(url, timeout=2.0)
            ready = r.status_code == 200
            if ready and r.headers.get("content-type", "").startswith("application/json"):
                body = r.json()
                ready = not isinstance(body, dict) or body.get("ready", True) is True
            if ready:
                return
            last = (r.status_code, r.text[:200])
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s (last: {last!r})")


def spawn_server(port: int, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the real service (``python -m service serve``) on 127.0.0.1:port, output to ``log_path``."""
    full_env = {**os.environ, "SKELACT_HOST": "127.0.0.1", "SKELACT_PORT": str(port), **(env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def run_server(
    port: int, log_path: Path, env: dict[str, str] | None = None, ready_timeout: float = 120.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the real service on 127.0.0.1:port, wait until it is ready; stop it afterwards."""
    proc = spawn_server(port, log_path, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", ready_timeout, proc)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def chromium_args(fake_camera: Path | None, grant_camera: bool = True) -> list[str]:
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
    if fake_camera is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake_camera}"]
    if grant_camera:
        args.append("--use-fake-ui-for-media-stream")
    return args
