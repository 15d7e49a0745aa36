"""Classifier speed: ONNX Runtime (the service's own ``OnnxClassifier``) vs PyTorch eager.

Same model, same real input windows (cut by the service's ``TrackBuffer`` from MediaPipe poses of
a real clip), same thread count for both runtimes (``torch.set_num_threads`` = ORT intra-op
threads), both ending in a softmax. Each batch size is timed in six interleaved rounds (ORT,
PyTorch, ORT, PyTorch...), so that a burst of background load hits both columns alike; the
statistic is the median call time. With an NVIDIA GPU the CUDA and TensorRT providers (and PyTorch on CUDA,
when the installed torch has it) add rows, with larger batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import gpu_available, machine_info
from bench.torch_models import Rebuilt, rebuild_torch_model
from service.buffer import TrackBuffer
from skeleton.layouts import get_layout
from skeleton.manifest import MANIFEST_FILE, InputSpec, ModelManifest, load_manifest
from skeleton.types import PersonPose

log = logging.getLogger(__name__)

CPU_BATCHES = (1, 8, 16, 32, 64)
GPU_EXTRA_BATCHES = (128, 256)
TARGET_BATCH = 16
TARGET_SPEEDUP = 2.0

PoseFrame = tuple[float, PersonPose | None, int]  # (timestamp, actor's pose or None, frame height)


@dataclass
class Row:
    model: str
    runtime: str  # "onnxruntime" or "pytorch"
    device: str  # "cpu", "cuda" or "tensorrt" (ONNX Runtime provider / torch device)
    threads: int  # intra-op threads (0: not applicable, GPU)
    batch: int
    median_ms: float
    p90_ms: float
    windows_per_s: float
    calls: int


def discover_models(models_dir: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Model folders as the service finds them (a ``manifest.json`` in each), optionally filtered."""
    if not models_dir.is_dir():
        return []
    dirs = sorted(p for p in models_dir.iterdir() if (p / MANIFEST_FILE).is_file())
    if names:
        dirs = [p for p in dirs if p.name in names]
    return dirs


def real_windows(spec: InputSpec, frames: Sequence[PoseFrame], count: int) -> tuple[np.ndarray, int]:
    """``count`` model inputs cut from a real pose track (repeated to fill); also how many are distinct.

    Falls back to zeros only when nobody was detected in the frames (reported as 0 distinct).
    """
    buf = TrackBuffer(1, spec, keep_all=True)
    for t, pose, h in frames:
        buf.push(t, pose, h)
    ends = buf.due() or buf.flush()
    wins = [buf.window(e).tensor for e in ends]
    if not wins:
        v = get_layout(spec.layout).num_joints
        return np.zeros((count, spec.channels, spec.window.length, v), np.float32), 0
    stack = np.stack(wins).astype(np.float32)
    reps = -(-count // len(stack))
    return np.ascontiguousarray(np.concatenate([stack] * reps)[:count]), len(wins)


def synchronized(call: Callable[[], object], sync: Callable[[], None]) -> Callable[[], object]:
    """``call`` that returns only once the device has finished it (GPU timings)."""

    def run() -> object:
        out = call()
        sync()
        return out

    return run


ROUNDS = 6
SETTLE_S = 0.05


def time_interleaved(
    calls: Sequence[Callable[[], object]],
    budget_s: float,
    min_calls: int,
    rounds: int = ROUNDS,
    max_calls: int = 2000,
) -> list[list[float]]:
    """Seconds per call for each of ``calls``, timed in ``rounds`` interleaved rounds of
    ``budget_s / rounds`` each (at least ``min_calls``, at most about ``max_calls`` calls in all),
    so that a burst of background load -- on this shared VM the second core is sometimes taken
    for a second or two -- lands in few rounds of each. Not call by call: a runtime's worker
    threads keep spinning for a moment after a call and would slow the other's multi-threaded
    calls; a short pause lets them settle."""
    out: list[list[float]] = [[] for _ in calls]
    per_round_calls = max(1, -(-min_calls // rounds))
    round_cap = max(per_round_calls, max_calls // rounds)
    for _ in range(rounds):
        for fn, times in zip(calls, out, strict=True):
            time.sleep(SETTLE_S)
            t_end = time.perf_counter() + budget_s / rounds
            start = len(times)
            while len(times) - start < per_round_calls or (
                len(times) - start < round_cap and time.perf_counter() < t_end
            ):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return out


def _row(model: str, runtime: str, device: str, threads: int, batch: int, times: list[float]) -> Row:
    a = np.asarray(times) * 1e3
    med = float(np.median(a))
    return Row(
        model,
        runtime,
        device,
        threads,
        batch,
        round(med, 3),
        round(float(np.percentile(a, 90)), 3),
        round(batch / (med / 1e3), 1),
        len(times),
    )


def _ort_runtime(
    model_dir: Path, manifest: ModelManifest, provider: str, threads: int, max_batch: int, cache: Path
) -> Any:
    from service.classifier import OnnxClassifier

    return OnnxClassifier(
        model_dir,
        manifest,
        [provider],
        threads=threads,
        trt_cache_dir=cache,  # engine folders per model and build (service.engine_cache)
        trt_fp16=True,
        max_batch_hint=max_batch,
    )


def _ort_bind(runtime: Any) -> Callable[[np.ndarray], Callable[[], object]]:
    def bind(windows: np.ndarray) -> Callable[[], object]:
        return lambda: runtime.predict(windows)

    return bind


def _torch_runner(module: Any, device: str) -> tuple[Callable[[np.ndarray], Callable[[], object]], Any]:
    """(bind(windows) -> zero-argument call, module on device). Input/output cross the host like ORT's."""
    import torch

    mod = module.to(device)

    def bind(windows: np.ndarray) -> Callable[[], object]:
        x_host = torch.from_numpy(windows)

        def call() -> object:
            with torch.inference_mode():
                out = torch.softmax(mod(x_host.to(device)), dim=1).cpu()
            return out

        return call

    return bind, mod


def bench_model(
    model_dir: Path,
    frames: Sequence[PoseFrame],
    batches: Sequence[int],
    threads_list: Sequence[int],
    budget_s: float,
    min_calls: int,
    gpu: bool,
    cache: Path,
    checkpoint: Path | None = None,
    gpu_batches: Sequence[int] = (),
) -> dict[str, Any]:
    """Rows for one model: ORT vs PyTorch on CPU per thread count, and GPU rows when there is one."""
    import torch

    manifest = load_manifest(model_dir, verify_sha=True)
    all_batches = sorted(set(batches) | set(gpu_batches if gpu else ()))
    windows, distinct = real_windows(manifest.input, frames, max(all_batches))
    ref = _ort_runtime(model_dir, manifest, "cpu", 1, max(all_batches), cache)
    probe = windows[: min(len(windows), 32)]
    rebuilt: Rebuilt = rebuild_torch_model(model_dir, manifest, ref.predict, probe, checkpoint)
    info: dict[str, Any] = {
        "model": manifest.name,
        "folder": model_dir.name,
        "architecture": manifest.architecture,
        "input": [
            manifest.input.channels,
            manifest.input.window.length,
            get_layout(manifest.input.layout).num_joints,
        ],
        "onnx_mib": round((model_dir / manifest.onnx.file).stat().st_size / 2**20, 2),
        "torch_weights": rebuilt.weights,
        "torch_source": rebuilt.source,
        "parity_max_abs": rebuilt.parity_max_abs,
        "params": rebuilt.params,
        "distinct_windows": distinct,
        "notes": [],
    }
    rows: list[Row] = []
    saved_threads = torch.get_num_threads()
    try:
        for threads in threads_list:
            ort_rt = _ort_runtime(model_dir, manifest, "cpu", threads, max(batches), cache)
            runners: list[tuple[str, Callable[[np.ndarray], Callable[[], object]]]] = [
                ("onnxruntime", _ort_bind(ort_rt))
            ]
            if rebuilt.module is not None:
                bind, _ = _torch_runner(rebuilt.module, "cpu")
                runners.append(("pytorch", bind))
            torch.set_num_threads(threads)
            rows += _measure(
                manifest.name, "cpu", threads, runners, windows, batches, budget_s, min_calls
            )
        if gpu:
            rows += _gpu_rows(
                model_dir,
                manifest,
                rebuilt,
                windows,
                all_batches,
                budget_s,
                min_calls,
                cache,
                info["notes"],
            )
    finally:
        torch.set_num_threads(saved_threads)
        if rebuilt.module is not None:
            rebuilt.module.to("cpu")
    if rebuilt.module is None:
        info["notes"].append(f"no PyTorch rows: {rebuilt.source}")
    info["rows"] = [asdict(r) for r in rows]
    return info


def _measure(
    model: str,
    device: str,
    threads: int,
    runners: list[tuple[str, Callable[[np.ndarray], Callable[[], object]]]],
    windows: np.ndarray,
    batches: Sequence[int],
    budget_s: float,
    min_calls: int,
) -> list[Row]:
    rows = []
    for b in batches:
        x = np.ascontiguousarray(windows[:b])
        calls = [(name, bind(x)) for name, bind in runners]
        for _, call in calls:  # warm-up: first-call allocations, thread pools, engine builds
            for _ in range(2):
                call()
        times = dict(zip((n for n, _ in calls), time_interleaved([c for _, c in calls], budget_s, min_calls),
                         strict=True))
        for name, _ in calls:
            rows.append(_row(model, name, device, threads, b, times[name]))
        log.info(
            "%s %s threads=%d batch=%d: %s",
            model,
            device,
            threads,
            b,
            ", ".join(f"{r.runtime} {r.median_ms:.2f} ms" for r in rows[-len(calls) :]),
        )
    return rows


def _gpu_rows(
    model_dir: Path,
    manifest: ModelManifest,
    rebuilt: Rebuilt,
    windows: np.ndarray,
    batches: Sequence[int],
    budget_s: float,
    min_calls: int,
    cache: Path,
    notes: list[str],
) -> list[Row]:
    """CUDA and TensorRT provider rows (the provider really used is checked), PyTorch on CUDA if possible."""
    import torch

    rows: list[Row] = []
    for provider in ("cuda", "tensorrt"):
        try:
            rt = _ort_runtime(model_dir, manifest, provider, 1, max(batches), cache)
        except Exception as exc:
            notes.append(f"ONNX Runtime {provider}: failed to start ({type(exc).__name__}: {exc})")
            continue
        if rt.provider != provider:
            notes.append(f"ONNX Runtime {provider}: not usable here, the session fell back to {rt.provider}")
            continue
        runners: list[tuple[str, Callable[[np.ndarray], Callable[[], object]]]] = [
            ("onnxruntime", _ort_bind(rt))
        ]
        rows += _measure(manifest.name, provider, 0, runners, windows, batches, budget_s, min_calls)
    if rebuilt.module is not None and torch.cuda.is_available():
        bind, _ = _torch_runner(rebuilt.module, "cuda")

        def synced(w: np.ndarray) -> Callable[[], object]:
            return synchronized(bind(w), torch.cuda.synchronize)

        rows += _measure(
            manifest.name, "cuda", 0, [("pytorch", synced)], windows, batches, budget_s, min_calls
        )
    elif rebuilt.module is not None:
        notes.append("PyTorch on CUDA: this torch build has no CUDA (install the CUDA wheel for GPU rows)")
    return rows


def run_classifier_bench(
    models_dir: Path,
    frames: Sequence[PoseFrame],
    names: Sequence[str] | None = None,
    batches: Sequence[int] = CPU_BATCHES,
    threads_list: Sequence[int] = (1,),
    budget_s: float = 1.0,
    min_calls: int = 3,
    cache: Path | None = None,
    checkpoints: dict[str, Path] | None = None,
    gpu: bool | None = None,
    gpu_batches: Sequence[int] = (*CPU_BATCHES, *GPU_EXTRA_BATCHES),
) -> dict[str, Any]:
    """The ``classifier`` section of the results."""
    gpu = gpu_available() if gpu is None else gpu
    section: dict[str, Any] = {
        "machine": machine_info(),
        "models_dir": str(models_dir),
        "gpu": gpu,
        "batches": list(batches),
        "threads": list(threads_list),
        "gpu_batches": list(gpu_batches) if gpu else [],
        "models": [],
        "notes": [],
    }
    if not gpu:
        section["notes"].append(
            "no NVIDIA GPU here: the CUDA and TensorRT rows (batches up to 256) are skipped; the same "
            "command adds them on a GPU host"
        )
    dirs = discover_models(models_dir, names)
    if not dirs:
        section["notes"].append(f"no models under {models_dir} (model folders with {MANIFEST_FILE})")
    t0 = time.perf_counter()
    for d in dirs:
        ck = (checkpoints or {}).get(d.name)
        section["models"].append(
            bench_model(
                d,
                frames,
                batches,
                threads_list,
                budget_s,
                min_calls,
                gpu,
                cache or Path("/tmp/skelact-bench-trt"),
                ck,
                gpu_batches,
            )
        )
    section["wall_s"] = round(time.perf_counter() - t0, 1)
    return section
