"""Idle memory of the real server over many stream lifecycles (docs/security.md, "Memory").

    python -m bench.idle_memory [--cycles 600] [--every 40]

Starts ``python -m service serve`` (shipped models, CPU, two pose workers). Two clients at once
connect, stream one real 320-px JPEG frame and disconnect, every other time without waiting for
the reply. After every ``every`` cycles, once the server is idle (no streams or tracks, its spare
estimators rebuilt), prints its resident memory. A leak shows as a climb; malloc's noise as
swings. The environment passes through to the server (e.g. ``MALLOC_ARENA_MAX=2`` to compare).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from bench.clips import STREAM_CLIP, jpeg_frames, resolve_clip
from bench.server import ServerHandle, launch_server, metric_total

IDLE_GAUGES = ("skelact_active_streams", "skelact_active_tracks", "skelact_pose_spares_missing")


def one_cycle(ws_url: str, jpeg: bytes, wait_for_reply: bool) -> None:
    """Connect, send one frame, disconnect (after its reply, or at once: mid-frame)."""
    from websockets.sync.client import connect

    with connect(ws_url, open_timeout=30, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=30))
        if hello.get("type") != "hello":
            raise RuntimeError(f"expected hello, got {hello}")
        ws.send(jpeg)
        while wait_for_reply:
            reply = json.loads(ws.recv(timeout=30))
            if reply.get("type") == "error":
                raise RuntimeError(f"the server answered an error: {reply}")
            if reply.get("type") == "frame":
                if (reply.get("frame_id"), reply.get("received")) != (0, 1):
                    raise RuntimeError(f"expected the reply to the stream's only frame, got {reply}")
                wait_for_reply = False


def run_cycles(ws_url: str, frames: list[bytes], first: int, count: int, clients: int = 2) -> None:
    """``count`` cycles per client, all clients at once; re-raises a client's error."""
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for i in range(first, first + count):
                one_cycle(ws_url, frames[(clients * i + k) % len(frames)], wait_for_reply=i % 2 == 0)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def idle_rss_mb(server: ServerHandle, timeout_s: float = 60.0) -> float:
    """The server's resident memory once every idle gauge reads 0 (and half a second more)."""
    deadline = time.monotonic() + timeout_s
    while any(metric_total(snap := server.metrics(), name) for name in IDLE_GAUGES):
        if time.monotonic() > deadline:
            busy = {name: metric_total(snap, name) for name in IDLE_GAUGES}
            raise RuntimeError(f"the server did not go idle in {timeout_s:.0f} s: {busy}")
        time.sleep(0.1)
    time.sleep(0.5)
    return server.rss_bytes() / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_memory", description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=600, help="connect/stream/disconnect cycles in all")
    p.add_argument("--every", type=int, default=40, help="cycles between readings")
    args = p.parse_args(argv)
    frames = jpeg_frames(resolve_clip(STREAM_CLIP), 20, start=30, max_side=320)
    env = {"SKELACT_PROVIDERS": "cpu", "SKELACT_POSE_WORKERS": "2"}
    with launch_server(env) as server:
        ws_url = server.url.replace("http", "ws", 1) + "/stream"
        readings = [(0, idle_rss_mb(server))]
        print(f"cycles {0:5d}  idle RSS {readings[-1][1]:7.1f} MB", flush=True)
        for done in range(0, args.cycles, args.every):
            run_cycles(ws_url, frames, done // 2, args.every // 2)
            readings.append((done + args.every, idle_rss_mb(server)))
            print(f"cycles {done + args.every:5d}  idle RSS {readings[-1][1]:7.1f} MB", flush=True)
    after_warmup = [rss for cycles, rss in readings if cycles >= args.every]
    print(
        f"after the first {args.every} cycles: {min(after_warmup):.1f}-{max(after_warmup):.1f} MB "
        f"(range {max(after_warmup) - min(after_warmup):.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
