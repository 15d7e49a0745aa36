"""Latency of WS /stream and throughput of POST /recognize on the real server.

    python -m bench.stream_latency [--fps 15] [--seconds 10] [--streams 1] [--model NAME]

Starts the service (uvicorn, loopback), streams a real UP-Fall clip as JPEG frames at ``fps``
from ``streams`` concurrent clients (websockets), and prints per-frame latency percentiles,
the processed frame rate and drops; then POSTs one clip and prints its processing stats.
The full, side-by-side benchmark with targets is ``python -m bench`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import numpy as np

from skeleton.paths import data_root


def stream(url: str, jpegs: list[bytes], fps: float, out: list[dict[str, object]], model: str | None) -> None:
    from websockets.sync.client import connect

    q = f"?model={model}" if model else ""
    with connect(url.replace("http", "ws") + "/stream" + q, max_size=None) as ws:
        json.loads(ws.recv())  # hello
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                try:
                    msg = json.loads(ws.recv(timeout=5))
                except TimeoutError:
                    break
                if msg.get("type") == "frame":
                    out.append(msg)
                    if msg["frame_id"] == len(jpegs) - 1:
                        break

        th = threading.Thread(target=reader)
        th.start()
        t0 = time.monotonic()
        for i, jpg in enumerate(jpegs):
            time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            ws.send(jpg)
        th.join(30)
        done.set()


@contextlib.contextmanager
def server_process() -> Iterator[str]:
    """``python -m service serve`` in its own process (clients here must not share its GIL)."""
    from bench.server import launch_server

    with launch_server() as server:
        yield server.url


def main() -> None:
    import cv2
    import httpx

    p = argparse.ArgumentParser()
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--model", default=None)
    a = p.parse_args()
    clip = data_root() / "upfall" / "Activity6" / "Trial1Cam1.mp4"
    cap = cv2.VideoCapture(str(clip))
    jpegs: list[bytes] = []
    while len(jpegs) < int(a.fps * a.seconds):
        ok, bgr = cap.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    with server_process() as url:
        ready = httpx.get(url + "/health/ready").json()
        print(f"models {ready['models']}; pose {ready['pose']}")
        outs: list[list[dict[str, object]]] = [[] for _ in range(a.streams)]
        threads = [
            threading.Thread(target=stream, args=(url, jpegs, a.fps, outs[k], a.model))
            for k in range(a.streams)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, out in enumerate(outs):
            lat = np.array([m["timings_ms"]["latency"] for m in out])  # type: ignore[index]
            pose = np.array([m["timings_ms"]["pose"] for m in out])  # type: ignore[index]
            last = out[-1] if out else {}
            print(
                f"stream {k}: sent {len(jpegs)} at {a.fps:g} fps; processed {last.get('processed')}, "
                f"dropped {last.get('dropped')} ({len(out) / a.seconds:.1f} fps answered); latency ms "
                f"p50 {np.percentile(lat, 50):.0f} p95 {np.percentile(lat, 95):.0f} max {lat.max():.0f}; "
                f"pose p50 {np.percentile(pose, 50):.0f}"
            )
            parts = ("queue", "decode", "pose", "track", "classify", "total", "latency")
            print("  stage ms p50 / p95: " + ", ".join(
                f"{name} {np.percentile([m['timings_ms'][name] for m in out], 50):.1f} / "  # type: ignore[index]
                f"{np.percentile([m['timings_ms'][name] for m in out], 95):.1f}"  # type: ignore[index]
                for name in parts
            ))
        with (clip.parents[1] / "Activity9" / "Trial1Cam1.mp4").open("rb") as f:
            t0 = time.monotonic()
            r = httpx.post(
                url + "/recognize",
                params={"model": a.model} if a.model else None,
                files={"file": ("Trial1Cam1.mp4", f, "video/mp4")},
                timeout=3600,
            )
        stats = r.json()["stats"]
        print(
            f"POST /recognize Activity9/Trial1Cam1: {stats['frames_processed']} frames in "
            f"{time.monotonic() - t0:.1f} s ({stats['fps_processed']} fps); stage ms {stats['stage_ms']}"
        )


if __name__ == "__main__":
    main()
