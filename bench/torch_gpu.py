"""The classifier section on a GPU machine without MediaPipe (docs/benchmarks.md, "PyTorch on an
NVIDIA H200"): the real poses are made here, the rows there.

    python -m bench.torch_gpu frames --out frames.pkl           # here: MediaPipe on the bench clip
    python -m bench.torch_gpu run frames.pkl --out DIR          # there: bench.classifier + CUDA graphs

``run`` writes ``classifier.json`` (`bench.classifier.run_classifier_bench`: ONNX Runtime and PyTorch
on the CPU, and the GPU rows the machine allows) and ``graphs.json``: per batch, one eager PyTorch
call on GPU-resident input and the same call replayed as a CUDA graph (medians of 100 synchronised
calls), their largest difference, and the CUDA kernels one call launches (why eager time does not
grow with the batch).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.classifier import real_windows, run_classifier_bench, synchronized
from bench.clips import PIPELINE_CLIP, resolve_clip
from skeleton.manifest import load_manifest
from skeleton.paths import REPO_ROOT

GRAPH_BATCHES = (1, 16, 64, 256)


def save_frames(out: Path, frames: int = 90) -> int:
    """The poses ``python -m bench`` feeds its classifier section (the bench clip's first frames)."""
    from bench.pipeline import bare_loop
    from service.core.config import Settings

    _, posed = bare_loop(resolve_clip(PIPELINE_CLIP), Settings(), max_frames=frames)
    with out.open("wb") as f:
        pickle.dump({"clip": PIPELINE_CLIP, "frames": posed}, f)
    return len(posed)


def _median_ms(fn: Callable[[], object], sync: Callable[[], None], calls: int = 100) -> float:
    """Median of ``calls`` device-synchronised calls after ten warm-ups, ms."""
    for _ in range(10):
        fn()
    sync()
    timed = synchronized(fn, sync)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        timed()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 3)


def graph_rows(models_dir: Path, frames: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """Eager vs CUDA-graph replay per model and batch (module docstring)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from training.checkpoint import load_checkpoint

    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name in names:
        folder = models_dir / name
        windows, _ = real_windows(load_manifest(folder).input, frames, max(GRAPH_BATCHES))
        model = load_checkpoint(folder / "checkpoint.pt").model.cuda().eval()
        rows = {}
        for b in GRAPH_BATCHES:
            x = torch.from_numpy(np.ascontiguousarray(windows[:b])).cuda()

            def call(x: Any = x, model: Any = model) -> Any:
                return torch.softmax(model(x), 1)

            with torch.inference_mode():
                row: dict[str, Any] = {"eager_ms": _median_ms(call, torch.cuda.synchronize)}
                ref = call()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm up off the default stream before capture
                    for _ in range(3):
                        call()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    captured = call()
                row["graph_ms"] = _median_ms(graph.replay, torch.cuda.synchronize)
                graph.replay()
                torch.cuda.synchronize()
                row["graph_max_diff"] = float((captured - ref).abs().max())
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    call()
                    torch.cuda.synchronize()
                row["cuda_kernels"] = sum(1 for e in prof.events() if str(e.device_type).endswith("CUDA"))
            rows[str(b)] = row
            print(name, b, row, flush=True)
        out[name] = rows
    return out


def run(frames_file: Path, out: Path, models_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Both parts (``quick``: one batch size and thread count, a smoke run, not a benchmark)."""
    import torch

    with frames_file.open("rb") as f:
        frames = pickle.load(f)["frames"]  # our own file, made by `frames`
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    t0 = time.time()
    result = run_classifier_bench(
        models_dir,
        frames,
        None,
        batches=(1,) if quick else (1, 8, 16, 32, 64),
        threads_list=[1] if quick else sorted({1, os.cpu_count() or 1}),
        budget_s=0.1 if quick else 1.0,
        min_calls=3,
        cache=out / "trt_cache",
        gpu=gpu,
        gpu_batches=(1, 256) if quick else (1, 8, 16, 32, 64, 128, 256),
    )
    result["seconds"] = round(time.time() - t0, 1)
    (out / "classifier.json").write_text(json.dumps(result, indent=1, default=str))
    if gpu:
        names = [m["folder"] for m in result["models"]]
        (out / "graphs.json").write_text(json.dumps(graph_rows(models_dir, frames, names), indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.torch_gpu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frames", help="here: the bench clip's poses, pickled")
    f.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="there: the classifier rows and the CUDA-graph comparison")
    r.add_argument("frames", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--models-dir", type=Path, default=REPO_ROOT / "model_zoo")
    r.add_argument("--quick", action="store_true", help="a smoke run, not a benchmark")
    args = p.parse_args(argv)
    if args.cmd == "frames":
        print(f"{save_frames(args.out)} frames -> {args.out}")
        return 0
    result = run(args.frames, args.out, args.models_dir, args.quick)
    for m in result["models"]:
        for row in m["rows"]:
            print(m["model"], row["runtime"], row["device"], row["threads"], row["batch"], row["median_ms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
