"""WebSocket streaming under load: N concurrent clients sending real JPEG frames at a fixed rate.

Each client connects to ``WS /stream``, waits for ``hello`` (its pose estimator is ready), then all
start together and send ``fps x seconds`` frames on a fixed schedule (each client with its own
phase, as independent cameras would) while a reader task collects the replies. The server numbers
binary frames per connection from 0 (``frame_id``, service/schemas.py ``FrameMessage``), so a reply
is matched to the send time of its frame: latency = reply received - frame sent, over loopback,
including any wait behind earlier frames. After the last frame a client waits at most ``drain_s``
for its reply. Drops come from the server's counter (the replies' counters miss those after a
client's last reply). A growing queue shows as a latency trend (median of the last third of the
frames / the middle third) above 1. The server's CPU time and RSS are sampled with psutil; its
stage times and micro-batch sizes come from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.clips import clip_info, jpeg_frames
from bench.machine import load_average, machine_info
from bench.server import MetricKey, ResourceSampler, ServerHandle, metric_delta
from service.core.config import Settings

CLIENTS = (1, 2, 4, 8)
RATES = (15.0, 30.0)
CLIENT_OFFSET_FRAMES = 13  # clients start at different points of the clip


@dataclass
class ClientRun:
    index: int
    frames: list[bytes]
    fps: float
    phase_s: float
    hello: dict[str, Any] = field(default_factory=dict)
    connect_s: float = 0.0
    send_times: list[float] = field(default_factory=list)
    sent: int = 0
    # (frame_id, received at, server latency ms, tracks, counters (received, processed, dropped))
    replies: list[tuple[int, float, float, int, tuple[int, int, int]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    send_end: float = 0.0
    keep_messages: bool = False  # also keep every frame reply as received (bench.tracking reads the boxes)
    messages: list[dict[str, Any]] = field(default_factory=list)


async def _open(
    url: str, model: str | None, timeout_s: float, deflate: bool = False
) -> tuple[Any, dict[str, Any], float]:
    from websockets.asyncio.client import connect

    ws_url = url.replace("http://", "ws://") + "/stream" + (f"?model={model}" if model else "")
    t0 = time.perf_counter()
    ws = await connect(
        ws_url,
        max_size=None,
        compression="deflate" if deflate else None,
        proxy=None,
        open_timeout=timeout_s,
    )
    hello = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    if hello.get("type") != "hello":
        await ws.close()
        raise RuntimeError(f"stream refused: {hello}")
    return ws, hello, time.perf_counter() - t0


async def _drive(ws: Any, run: ClientRun, start_at: float, drain_s: float) -> None:
    """Send on schedule and read replies until the last frame's reply (or ``drain_s`` after sending)."""
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    run.send_times = [0.0] * len(run.frames)
    sending_done = asyncio.Event()
    last_id = len(run.frames) - 1

    async def sender() -> None:
        try:
            for i, jpg in enumerate(run.frames):
                delay = start_at + run.phase_s + i / run.fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                run.send_times[i] = time.perf_counter()
                await ws.send(jpg)
                run.sent += 1
        except ConnectionClosed as exc:
            run.errors.append(f"connection closed while sending: {exc}")
        finally:
            run.send_end = time.perf_counter()
            sending_done.set()

    async def reader() -> None:
        deadline: float | None = None
        while True:
            if sending_done.is_set() and deadline is None:
                deadline = loop.time() + drain_s
            timeout = 0.5 if deadline is None else deadline - loop.time()
            if timeout <= 0:
                return
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                run.errors.append(f"connection closed: {exc}")
                return
            now = time.perf_counter()
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "frame":
                fid = int(msg["frame_id"])
                counters = (int(msg["received"]), int(msg["processed"]), int(msg["dropped"]))
                run.replies.append(
                    (fid, now, float(msg["timings_ms"]["latency"]), len(msg["tracks"]), counters)
                )
                if run.keep_messages:
                    run.messages.append(msg)
                if fid >= last_id:
                    return
            elif kind == "error":
                run.errors.append(f"{msg.get('code')}: {msg.get('message')}")

    send_task = asyncio.create_task(sender())
    try:
        await reader()
    finally:
        if not send_task.done():
            send_task.cancel()
        await asyncio.gather(send_task, return_exceptions=True)


@dataclass
class Measured:
    runs: list[ClientRun]
    wall_s: float
    before: dict[MetricKey, float]
    after: dict[MetricKey, float]
    resources: dict[str, float]


async def run_scenario(
    server: ServerHandle,
    clips: list[list[bytes]],
    fps: float,
    drain_s: float,
    model: str | None,
    open_timeout_s: float,
    deflate: bool = False,
) -> Measured:
    """Connect every client (estimators are built then), then measure only the streaming itself."""
    n = len(clips)
    runs = [ClientRun(k, frames, fps, k / (n * fps)) for k, frames in enumerate(clips)]
    opened = await asyncio.gather(*(_open(server.url, model, open_timeout_s, deflate) for _ in runs))
    for run, (_, hello, secs) in zip(runs, opened, strict=True):
        run.hello, run.connect_s = hello, round(secs, 3)
    loop = asyncio.get_running_loop()
    try:
        before = server.metrics()
        start_at = loop.time() + 0.3
        with ResourceSampler(server) as sampler:
            t0 = time.perf_counter()
            await asyncio.gather(
                *(_drive(ws, run, start_at, drain_s) for (ws, _, _), run in zip(opened, runs, strict=True))
            )
            wall = time.perf_counter() - t0
        after = server.metrics()
    finally:
        await asyncio.gather(*(ws.close() for ws, _, _ in opened), return_exceptions=True)
    return Measured(runs, wall, before, after, sampler.result)


def _end(run: ClientRun) -> float:
    """When the client's traffic ended: its last send or its last reply, whichever is later."""
    return max(run.send_end, run.replies[-1][1] if run.replies else 0.0)


def _pct(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 1) if a.size else None


def summarize(runs: list[ClientRun], fps: float) -> dict[str, Any]:
    lat: list[tuple[float, float]] = []  # (send time, latency ms)
    server_lat: list[float] = []
    per_client = []
    sent = replies = dropped = tracks = 0
    errors: list[str] = []
    for run in runs:
        span = max(_end(run) - run.send_times[0], 1e-9) if run.sent else 1e-9
        for fid, t_recv, s_lat, n_tracks, _ in run.replies:
            lat.append((run.send_times[fid], 1e3 * (t_recv - run.send_times[fid])))
            server_lat.append(s_lat)
            tracks += n_tracks
        last = run.replies[-1][4] if run.replies else (0, 0, 0)
        sent += run.sent
        replies += len(run.replies)
        dropped += last[2]
        errors += run.errors
        client_lat = np.asarray([1e3 * (t - run.send_times[f]) for f, t, *_ in run.replies])
        per_client.append(
            {
                "sent": run.sent,
                "replies": len(run.replies),
                "dropped": last[2],
                "processed_fps": round(len(run.replies) / span, 2),
                "p95_ms": _pct(client_lat, 95),
                "connect_s": run.connect_s,
            }
        )
    lat.sort()
    a = np.asarray([x for _, x in lat])
    third = len(a) // 3
    trend = None
    if third >= 3:
        # last third vs middle third: the start-up transient (idle workers) is left out
        middle = a[third : len(a) - third]
        trend = round(float(np.median(a[-third:]) / max(float(np.median(middle)), 1e-9)), 2)
    span = (
        max((max(_end(r) for r in runs) - min(r.send_times[0] for r in runs if r.sent)), 1e-9)
        if sent
        else 0.0
    )
    s = np.asarray(server_lat)
    return {
        "sent": sent,
        "replies": replies,
        "dropped": dropped,
        "unanswered": sent - replies - dropped,
        "drop_rate": round(dropped / sent, 3) if sent else 0.0,
        "latency_ms": {"p50": _pct(a, 50), "p95": _pct(a, 95), "p99": _pct(a, 99), "max": _pct(a, 100)},
        "server_latency_ms": {"p50": _pct(s, 50), "p95": _pct(s, 95), "p99": _pct(s, 99)},
        "latency_trend": trend,
        "processed_fps": round(replies / span, 2) if span else 0.0,
        "processed_fps_per_client": round(replies / span / len(runs), 2) if span else 0.0,
        "offered_fps": fps * len(runs),
        "tracks_per_reply": round(tracks / replies, 2) if replies else 0.0,
        "errors": errors[:10],
        "per_client": per_client,
    }


def _server_side(before: dict[MetricKey, float], after: dict[MetricKey, float]) -> dict[str, Any]:
    stages = {}
    for stage in ("decode", "pose", "track", "classify", "total", "latency", "queue"):
        n = metric_delta(before, after, "skelact_stage_seconds_count", stage=stage, source="stream")
        total = metric_delta(before, after, "skelact_stage_seconds_sum", stage=stage, source="stream")
        stages[stage] = round(1e3 * total / n, 2) if n else None
    batches = metric_delta(before, after, "skelact_batch_size_count")
    windows = metric_delta(before, after, "skelact_batch_size_sum")
    singles = metric_delta(before, after, "skelact_batch_size_bucket", le="1.0")
    return {
        "stage_ms_mean": stages,
        "batches": int(batches),
        "windows": int(windows),
        "mean_batch": round(windows / batches, 3) if batches else None,
        "multi_window_batches": int(batches - singles),
        "frames_dropped": int(metric_delta(before, after, "skelact_frames_dropped_total")),
        "solo_frames": int(metric_delta(before, after, "skelact_solo_pose_frames_total")),
    }


def bare_frames(frames: list[bytes], fps: float, settings: Settings, threads: int = 1) -> dict[str, Any]:
    """The single client's frames through decode + pose in one thread, nothing else: what the
    single-stream latency is compared with (same JPEGs, same estimator settings as the server).
    ``threads`` > 1: the estimator a solo stream uses (its model calls on that many threads)."""
    from perception.video import decode_image

    est = settings.pose_spec(threads).create()
    decode, pose = [], []
    try:
        for i, jpg in enumerate(frames):
            t0 = time.perf_counter()
            rgb = decode_image(jpg, settings.pose_max_side)
            t1 = time.perf_counter()
            est.estimate(rgb, i / fps)
            decode.append(t1 - t0)
            pose.append(time.perf_counter() - t1)
    finally:
        est.close()
    total = 1e3 * (np.asarray(decode) + np.asarray(pose))
    return {
        "frames": len(frames),
        "fps": fps,
        "threads": threads,
        "decode_ms": round(1e3 * float(np.mean(decode)), 2),
        "pose_ms": round(1e3 * float(np.mean(pose)), 2),
        "ms_per_frame": round(float(total.mean()), 2),
        "p50_ms": round(float(np.percentile(total, 50)), 1),
        "p95_ms": round(float(np.percentile(total, 95)), 1),
        "max_ms": round(float(total.max()), 1),
    }


def run_stream_bench(
    server: ServerHandle,
    clip: Path,
    clients: tuple[int, ...] | list[int] = CLIENTS,
    rates: tuple[float, ...] | list[float] = RATES,
    seconds: float = 10.0,
    drain_s: float = 5.0,
    model: str | None = None,
    open_timeout_s: float = 120.0,
    pause_s: float = 1.0,
    deflate: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The ``stream`` section: the bare loop on the single client's frames, then one scenario per
    (rate, clients)."""
    max_frames = round(max(rates) * seconds)
    frames = jpeg_frames(clip, max_frames + CLIENT_OFFSET_FRAMES * (max(clients) - 1))
    low = min(rates)
    settings = settings or Settings()
    bare_frames(frames[:2], low, settings)  # process-wide MediaPipe start-up, untimed
    bare = bare_frames(frames[: round(low * seconds)], low, settings)
    solo_threads = settings.solo_threads  # the estimator of a stream alone on the server
    bare_solo = None
    if solo_threads > 1:
        bare_solo = bare_frames(frames[: round(low * seconds)], low, settings, solo_threads)
    section: dict[str, Any] = {
        "machine": machine_info(),
        "clip": clip_info(clip),
        "jpeg_kib": round(float(np.mean([len(f) for f in frames])) / 1024, 1),
        "seconds": seconds,
        "drain_s": drain_s,
        "ws_deflate": deflate,
        "server_pose": server.ready.get("pose", ""),
        "server_models": server.ready.get("models", {}),
        "bare": bare,
        "bare_solo": bare_solo,
        "scenarios": [],
    }
    for fps in rates:
        count = round(fps * seconds)
        for n in clients:
            per_client = [
                frames[k * CLIENT_OFFSET_FRAMES : k * CLIENT_OFFSET_FRAMES + count] for k in range(n)
            ]
            time.sleep(pause_s)  # let the previous scenario's sessions close
            load0 = load_average()
            m = asyncio.run(run_scenario(server, per_client, fps, drain_s, model, open_timeout_s, deflate))
            summary = summarize(m.runs, fps)
            side = {**_server_side(m.before, m.after), **m.resources}
            # The replies' counters miss frames dropped after a client's last reply; the server's
            # counter has them all (no other traffic during a scenario).
            summary["dropped_in_replies"] = summary["dropped"]
            summary["dropped"] = max(summary["dropped"], side["frames_dropped"])
            summary["unanswered"] = summary["sent"] - summary["replies"] - summary["dropped"]
            summary["drop_rate"] = round(summary["dropped"] / summary["sent"], 3) if summary["sent"] else 0.0
            section["scenarios"].append(
                {
                    "clients": n,
                    "fps": fps,
                    "wall_s": round(m.wall_s, 2),
                    **summary,
                    "server": side,
                    "load_average": [load0, load_average()],
                }
            )
    return section
