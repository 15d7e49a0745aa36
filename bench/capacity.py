"""``python -m bench capacity``: the figures of the capacity model (docs/deployment.md, "Capacity
model") in one command, on a server shaped like one pod of ``cores`` CPU cores.

* **Streams per pod at the latency target**: 1, 2, 3 ... concurrent clients stream real JPEG frames
  at ``fps`` for ``step_s`` seconds each (the ``stream`` section's clients); the capacity is the
  largest count whose round-trip latency p95 stays within ``target_p95_ms`` and whose server drops
  stay within ``max_drop`` of the frames sent. The ramp stops at the first count that misses.
* **Clips per core**: ``cores`` concurrent ``POST /recognize`` of one real clip (each clip's frames on
  one pose lane, the default), seconds of video processed per second of wall time, per core.

The server is pinned to ``cores`` CPUs (``sched_setaffinity``, inherited by all its threads, like a
pod's CPU limit) with ``SKELACT_POSE_WORKERS=cores``, as the Helm chart sets them. Measure in a quiet
window: the load average is recorded next to every step.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.clips import clip_info, jpeg_frames
from bench.machine import load_average, machine_info
from bench.pipeline import recognize_once
from bench.server import ServerHandle, launch_server
from bench.streaming import CLIENT_OFFSET_FRAMES, run_scenario, summarize

__all__ = ["pod_cpus", "run_capacity_bench", "stream_capacity"]


def pod_cpus(cores: int) -> set[int]:
    """The first ``cores`` CPUs this process may use (a pod's CPU limit, as an affinity mask)."""
    usable = sorted(os.sched_getaffinity(0))
    if cores > len(usable):
        raise SystemExit(f"--cores {cores}: this machine has {len(usable)} usable CPUs")
    return set(usable[:cores])


def _passes(row: dict[str, Any], target_p95_ms: float, max_drop: float) -> bool:
    p95 = row["latency_ms"]["p95"]
    return (
        p95 is not None and p95 <= target_p95_ms and row["drop_rate"] <= max_drop and row["unanswered"] == 0
    )


def stream_capacity(
    server: ServerHandle,
    frames: list[bytes],
    fps: float,
    step_s: float,
    target_p95_ms: float,
    max_drop: float,
    max_clients: int,
    model: str | None = None,
    drain_s: float = 5.0,
) -> dict[str, Any]:
    """Ramp concurrent streams until one misses the target; the last count that met it."""
    steps: list[dict[str, Any]] = []
    best = 0
    count = round(fps * step_s)
    for n in range(1, max_clients + 1):
        clips = [frames[k * CLIENT_OFFSET_FRAMES : k * CLIENT_OFFSET_FRAMES + count] for k in range(n)]
        load0 = load_average()
        measured = asyncio.run(run_scenario(server, clips, fps, drain_s, model, open_timeout_s=120.0))
        summary = summarize(measured.runs, fps)
        row = {
            "clients": n,
            "sent": summary["sent"],
            "replies": summary["replies"],
            "dropped": summary["dropped"],
            "unanswered": summary["unanswered"],
            "drop_rate": summary["drop_rate"],
            "latency_ms": summary["latency_ms"],
            "processed_fps": summary["processed_fps"],
            "server_cpu_percent": measured.resources.get("server_cpu_percent"),
            "server_rss_peak_mib": measured.resources.get("server_rss_peak_mib"),
            "load_average": [load0, load_average()],
            "errors": summary["errors"],
        }
        row["meets_target"] = _passes(row, target_p95_ms, max_drop)
        steps.append(row)
        if not row["meets_target"]:
            break
        best = n
        time.sleep(1.0)  # let the step's sessions close
    return {"streams": best, "steps": steps}


def clip_throughput(
    server: ServerHandle, clip: Path, concurrent: int, model: str | None = None
) -> dict[str, Any]:
    """``concurrent`` POST /recognize of ``clip`` at once: seconds of video per second of wall time."""
    duration = float(clip_info(clip)["duration_s"])
    load0 = load_average()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        runs = list(pool.map(lambda _: recognize_once(server, clip, model), range(concurrent)))
    wall = time.perf_counter() - t0
    return {
        "concurrent": concurrent,
        "clip_s": round(duration, 3),
        "wall_s": round(wall, 3),
        "video_s_per_s": round(concurrent * duration / wall, 3),
        "frames": [r["frames"] for r in runs],
        "load_average": [load0, load_average()],
    }


def run_capacity_bench(
    clip: Path,
    stream_clip: Path,
    cores: int,
    fps: float = 15.0,
    step_s: float = 20.0,
    target_p95_ms: float = 150.0,
    max_drop: float = 0.05,
    max_clients: int | None = None,
    model: str | None = None,
    server_env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """The ``capacity`` section: one server shaped like a pod of ``cores`` cores, streams then clips."""
    cpus = pod_cpus(cores)
    max_clients = max_clients or 4 * cores
    frames = jpeg_frames(stream_clip, round(fps * step_s) + CLIENT_OFFSET_FRAMES * (max_clients - 1))
    env = {
        **(server_env or {}),
        "SKELACT_POSE_WORKERS": str(cores),
        "SKELACT_MAX_STREAMS": str(max_clients + 1),
    }
    with launch_server(env, log_path=log_path, cpus=cpus) as server:
        streams = stream_capacity(server, frames, fps, step_s, target_p95_ms, max_drop, max_clients, model)
        clips = clip_throughput(server, clip, cores, model)
    return {
        "machine": machine_info(),
        "cores": cores,
        "cpus": sorted(cpus),
        "fps": fps,
        "step_s": step_s,
        "target_p95_ms": target_p95_ms,
        "max_drop": max_drop,
        "stream_clip": clip_info(stream_clip),
        "clip": clip_info(clip),
        "server_pose": server.ready.get("pose", ""),
        "streams": streams["streams"],
        "streams_per_core": round(streams["streams"] / cores, 3),
        "steps": streams["steps"],
        "clips": {**clips, "video_s_per_s_per_core": round(clips["video_s_per_s"] / cores, 3)},
    }


def capacity_md(sec: dict[str, Any]) -> list[str]:
    """The section in the report (and docs/benchmarks.md)."""
    clips = sec["clips"]
    cores = sec["cores"]
    lines = [
        "### Capacity of one pod",
        "",
        f"A server pinned to {cores} core(s) (CPUs {sec['cpus']}, `SKELACT_POSE_WORKERS={cores}`); "
        f"streams at {sec['fps']:g} fps of `{sec['stream_clip']['name']}`, {sec['step_s']:g} s per "
        f"step; target: round-trip p95 <= {sec['target_p95_ms']:g} ms and drops <= "
        f"{100 * sec['max_drop']:g} %.",
        "",
        f"**{sec['streams']} stream(s) per pod, {sec['streams_per_core']:g} per core**; clips: "
        f"{clips['video_s_per_s']:g} s of video per second with {clips['concurrent']} at once "
        f"(`{sec['clip']['name']}`), **{clips['video_s_per_s_per_core']:g} per core**.",
        "",
        "| streams | p50 ms | p95 ms | drops | processed fps | server CPU % | RSS MiB | load | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sec["steps"]:
        lat = s["latency_ms"]
        cells = [
            s["clients"],
            lat["p50"],
            lat["p95"],
            f"{100 * s['drop_rate']:.1f} %",
            s["processed_fps"],
            s["server_cpu_percent"],
            s["server_rss_peak_mib"],
            s["load_average"][0][0],
            "met" if s["meets_target"] else "missed",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
