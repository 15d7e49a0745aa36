"""Does MediaPipe pose run in parallel in threads (GIL released) on this machine?

    python -m bench.pose_threads [--frames 60] [--workers 2]

Runs the service's pose estimator on real UP-Fall frames: one stream alone, then ``workers``
streams at once in threads, then in processes. If threads scale like processes, the service's
thread pool is enough (no process pool, no pickling of frames).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from bench.clips import STREAM_CLIP
from skeleton.paths import data_root

CLIP = data_root() / STREAM_CLIP


def one_stream(frames: int, start_at: float = 0.0) -> tuple[float, float]:
    """(start, end) wall-clock times of ``frames`` frames through a fresh, warmed-up estimator.

    Decoding and estimator start-up happen before ``start_at``, so only pose is timed and all
    workers run their loops at the same time.
    """
    import itertools

    from perception.pose.estimator import create_pose_estimator
    from perception.video import VideoReader

    with VideoReader(CLIP) as reader:
        clip = list(itertools.islice(reader, frames + 1))
    est = create_pose_estimator("tasks", max_people=4)
    try:
        est.estimate(clip[0].rgb, clip[0].timestamp_s)
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        for f in clip[1:]:
            est.estimate(f.rgb, f.timestamp_s)
        return t0, time.time()
    finally:
        est.close()


def gil_free_share(frames: int) -> float:
    """How much a GIL-bound Python thread advances while another thread runs pose."""
    import itertools
    import threading

    from perception.pose.estimator import create_pose_estimator
    from perception.video import VideoReader

    with VideoReader(CLIP) as reader:
        clip = list(itertools.islice(reader, frames + 1))
    est = create_pose_estimator("tasks", max_people=4)
    est.estimate(clip[0].rgb, clip[0].timestamp_s)
    count = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    try:
        th = threading.Thread(target=spin)
        th.start()
        t0 = time.perf_counter()
        for f in clip[1:]:
            est.estimate(f.rgb, f.timestamp_s)
        busy = time.perf_counter() - t0
        stop.set()
        th.join()
        with_pose = count[0] / busy
    finally:
        est.close()
    count[0] = 0
    stop.clear()
    th = threading.Thread(target=spin)
    th.start()
    time.sleep(busy)
    stop.set()
    th.join()
    return with_pose / (count[0] / busy)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    n, w = a.frames, a.workers
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    t0, t1 = one_stream(n)
    alone = n / (t1 - t0)
    print(f"1 stream alone:          {alone:6.1f} frames/s")
    pools = (
        ("threads", lambda: ThreadPoolExecutor(w)),
        # spawn: forking a process that already runs MediaPipe threads corrupts its heap
        ("processes", lambda: ProcessPoolExecutor(w, mp_context=multiprocessing.get_context("spawn"))),
    )
    for name, make_pool in pools:
        start_at = time.time() + 20.0
        with make_pool() as pool:
            spans = list(pool.map(one_stream, [n] * w, [start_at] * w))
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        rate = w * n / wall
        print(f"{w} streams in {name:9s}: {rate:6.1f} frames/s aggregate (x{rate / alone:.2f} of one stream)")
    print(
        f"GIL free during pose: {gil_free_share(n):.0%} (a pure-Python thread's progress while "
        "pose runs, relative to its progress alone)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
