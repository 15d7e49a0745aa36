"""Whole-clip throughput: a bare decode + pose loop vs ``POST /recognize`` on the real server.

The bare loop is the floor the service is measured against: the service's own decoder
(``perception.video.VideoReader``) and a fresh pose estimator built exactly as the service builds
one (``Settings().pose_spec()``, same kind and ``max_people``), frames in order, nothing else --
no tracking, buffering, classification, HTTP or JSON. ``POST /recognize`` uploads the same file
to the server over loopback and is timed from the client (upload and response included); its
``stats`` give the server's own wall time and per-stage sums. Runs alternate (bare, service,
bare, service...) so slow drifts in background load hit both; the best run of each is compared.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.clips import clip_info
from bench.machine import load_average, machine_info
from bench.server import ResourceSampler, ServerHandle, metric_delta
from service.core.config import Settings
from skeleton.types import PersonPose

PoseFrame = tuple[float, PersonPose | None, int]


def bare_loop(
    clip: Path, settings: Settings, max_frames: int | None = None
) -> tuple[dict[str, Any], list[PoseFrame]]:
    """Decode + pose every frame of ``clip`` in one thread; timings and the top person's pose per frame."""
    from perception.video import VideoReader

    t0 = time.perf_counter()
    est = settings.pose_spec().create()
    create_s = time.perf_counter() - t0
    decode_s = pose_s = 0.0
    frames: list[PoseFrame] = []
    people = 0
    me = psutil.Process()
    try:
        reader = VideoReader(clip, max_side=settings.pose_max_side, allow_truncated=True)
        it = iter(reader)
        cpu0 = me.cpu_times()
        t_start = time.perf_counter()
        while max_frames is None or len(frames) < max_frames:
            t0 = time.perf_counter()
            frame = next(it, None)
            t1 = time.perf_counter()
            if frame is None:
                break
            poses = est.estimate(frame.rgb, frame.timestamp_s)
            t2 = time.perf_counter()
            decode_s += t1 - t0
            pose_s += t2 - t1
            people += len(poses)
            frames.append((frame.timestamp_s, poses[0] if poses else None, frame.height))
        wall = time.perf_counter() - t_start
        cpu1 = me.cpu_times()
        reader.close()
    finally:
        est.close()
    n = max(len(frames), 1)
    return {
        "frames": len(frames),
        "wall_s": round(wall, 3),
        "fps": round(len(frames) / wall, 2) if wall > 0 else 0.0,
        "ms_per_frame": round(1e3 * wall / n, 2),
        "decode_ms": round(1e3 * decode_s / n, 2),
        "pose_ms": round(1e3 * pose_s / n, 2),
        "estimator_create_s": round(create_s, 3),
        "people_per_frame": round(people / n, 2),
        "cpu_percent": round(100 * (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(wall, 1e-9), 1),
    }, frames


def recognize_once(server: ServerHandle, clip: Path, model: str | None = None) -> dict[str, Any]:
    """One ``POST /recognize`` of ``clip``, timed from the client, with the server's CPU use."""
    before = server.metrics()
    with ResourceSampler(server) as sampler, clip.open("rb") as f:
        t0 = time.perf_counter()
        r = httpx.post(
            server.url + "/recognize",
            params={"model": model} if model else None,
            files={"file": (clip.name, f, "video/mp4")},
            timeout=3600,
        )
        wall = time.perf_counter() - t0
    r.raise_for_status()
    body = r.json()
    stats = body["stats"]
    n = max(int(stats["frames_processed"]), 1)
    after = server.metrics()
    batches = metric_delta(before, after, "skelact_batch_size_count")
    windows = metric_delta(before, after, "skelact_batch_size_sum")
    return {
        "wall_s": round(wall, 3),
        "server_wall_s": stats["wall_s"],
        "frames": stats["frames_processed"],
        "fps": round(stats["frames_processed"] / wall, 2) if wall > 0 else 0.0,
        "server_fps": stats["fps_processed"],
        "stage_ms_per_frame": {k: round(v / n, 2) for k, v in stats["stage_ms"].items()},
        "windows": stats["windows"],
        "batches": stats["batches"],
        "mean_batch": round(windows / batches, 2) if batches else None,
        "model": body["model"],
        "provider": body["provider"],
        "clip_label": (body.get("clip") or {}).get("label"),
        "pose_lanes": stats.get("pose_lanes", 1),
        **sampler.result,
    }


def run_pipeline_bench(
    server: ServerHandle, clip: Path, settings: Settings, repeats: int = 2, model: str | None = None
) -> tuple[dict[str, Any], list[PoseFrame]]:
    """The ``pipeline`` section; also the poses of the bare loop (real classifier input)."""
    info = clip_info(clip)
    load_before = load_average()
    bare_runs, service_runs, frames = _alternate(server, clip, settings, repeats, model)
    bare = min(bare_runs, key=lambda r: r["wall_s"])
    svc = min(service_runs, key=lambda r: r["wall_s"])
    duration = float(info["duration_s"]) or bare["frames"] / 18.0
    section = {
        "machine": machine_info(),
        "clip": info,
        "settings": _pose_settings(settings),
        "server_pose": server.ready.get("pose", ""),
        "repeats": len(bare_runs),
        "bare_runs": bare_runs,
        "service_runs": service_runs,
        "bare": {**bare, "x_realtime": round(duration / bare["wall_s"], 2)},
        "service": {**svc, "x_realtime": round(duration / svc["wall_s"], 2)},
        "overhead": round(svc["wall_s"] / bare["wall_s"] - 1.0, 4),
        "speedup": round(bare["wall_s"] / svc["wall_s"], 4),
        "run_spread": {
            "bare": _spread([r["wall_s"] for r in bare_runs]),
            "service": _spread([r["wall_s"] for r in service_runs]),
        },
        "load_average": [load_before, load_average()],
    }
    return section, frames


def run_lanes_rows(
    server: ServerHandle,
    clip: Path,
    settings: Settings,
    lanes: int,
    repeats: int = 2,
    model: str | None = None,
) -> dict[str, Any]:
    """``POST /recognize`` on a server whose clips use ``lanes`` pose estimators at once, alternated
    with the same bare loop as the main rows (its own runs: the machine's load drifts)."""
    bare_runs, service_runs, _ = _alternate(server, clip, settings, repeats, model)
    bare = min(bare_runs, key=lambda r: r["wall_s"])
    svc = min(service_runs, key=lambda r: r["wall_s"])
    return {
        "lanes": lanes,
        "server_lanes": svc["pose_lanes"],
        "bare_runs": bare_runs,
        "service_runs": service_runs,
        "bare": bare,
        "service": svc,
        "speedup": round(bare["wall_s"] / svc["wall_s"], 4),
    }


def _alternate(
    server: ServerHandle, clip: Path, settings: Settings, repeats: int, model: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[PoseFrame]]:
    """``repeats`` bare loops and ``POST /recognize`` calls, alternating (load changes hit both);
    also the last bare loop's poses."""
    # Warm-up, not timed: the process-wide first estimator (libraries, ~seconds) here, and in the
    # server the first upload and pool threads; the timed runs then see only per-clip costs.
    _, frames = bare_loop(clip, settings, max_frames=2)
    recognize_once(server, clip, model)
    bare_runs, service_runs = [], []
    for _ in range(max(1, repeats)):
        run, frames = bare_loop(clip, settings)
        bare_runs.append(run)
        service_runs.append(recognize_once(server, clip, model))
    return bare_runs, service_runs, frames


def _spread(values: list[float]) -> float:
    """(max - min) / min of the repeated runs: how noisy the machine was."""
    a = np.asarray(values)
    return round(float((a.max() - a.min()) / a.min()), 3) if len(a) else 0.0


def _pose_settings(s: Settings) -> dict[str, Any]:
    return {
        "pose_kind": s.pose_kind,
        "max_people": s.max_people,
        "pose_options": s.pose_spec().options,
        "pose_max_side": s.pose_max_side,
        "pose_workers": s.pose_workers,
        "pose_executor": s.pose_executor,
        "ort_threads": s.ort_threads,
        "batch_max_size": s.batch_max_size,
        "batch_deadline_ms": s.batch_deadline_ms,
        "providers": list(s.providers),
    }
