"""``python -m bench`` -- the benchmark harness (docs/benchmarks.md).

    python -m bench                      # everything, full settings (~5-10 min on 2 cores)
    python -m bench classifier           # one section; others already in the results are kept
    python -m bench pipeline stream --clients 1,2 --fps 15
    python -m bench tracking             # people against the labelled clips (groundtruth/); only when named
    python -m bench capacity --cores 4   # streams and clips per core of a 4-core pod; only when named
    python -m bench --quick              # tiny settings, a smoke run (~1-2 min)
    python -m bench report               # re-render report.md / plots / docs from results.json

Writes ``results.json``, ``report.md``, ``classifier.png``, ``pipeline.png``, ``streaming.png`` and
``server.log`` to ``--out`` (default ``$SKELACT_BENCH_OUT``, else bench/results/) and, when writing to
bench/results/, the results section of docs/benchmarks.md. The service runs as its own process
(``python -m service serve`` on a free loopback port); ``--set SKELACT_X=Y`` configures it and the
bare pose loop alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.clips import PIPELINE_CLIP, STREAM_CLIP, resolve_clip, trim_clip
from bench.machine import cpu_jiffies, machine_info, steal_percent
from skeleton.paths import REPO_ROOT

REPO_OUT = REPO_ROOT / "bench" / "results"
# The bench image points this at its mounted results folder (docs/deployment.md).
OUT_ENV = "SKELACT_BENCH_OUT"
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
SECTIONS = ("classifier", "pipeline", "stream", "tracking", "capacity")
# Sections "all" runs; tracking streams every labelled clip in real time at two rates (~25 min here)
DEFAULT_SECTIONS = ("classifier", "pipeline", "stream")
log = logging.getLogger("bench")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _writable_or_exit(out: Path) -> None:
    """Fail before minutes of measuring, not at the end, when the results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SystemExit(
            f"cannot write the results folder {out} ({exc.strerror or exc}) as uid {os.getuid()}: "
            "pass a writable --out (or SKELACT_BENCH_OUT); in Docker, create the mounted folder and "
            "run as its owner: mkdir -p bench/results-gpu && SKELACT_BENCH_USER=$(id -u):$(id -g) "
            "docker compose run --rm bench"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "sections",
        nargs="*",
        default=[],
        metavar="SECTION",
        help=f"{', '.join(SECTIONS)}, all (= {', '.join(DEFAULT_SECTIONS)}; the default) or report",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get(OUT_ENV) or REPO_OUT),
        help=f"results folder (default ${OUT_ENV}, else bench/results)",
    )
    p.add_argument(
        "--docs",
        dest="docs",
        action="store_true",
        default=None,
        help="update docs/benchmarks.md (default: only when --out is the repository's bench/results)",
    )
    p.add_argument("--no-docs", dest="docs", action="store_false")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (not a benchmark)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SKELACT_X=Y",
        help="service setting for the server and the bare pose loop (repeatable)",
    )
    g = p.add_argument_group("classifier")
    g.add_argument("--models-dir", type=Path, default=None, help="model zoo (default: the service's)")
    g.add_argument("--models", default=None, help="comma-separated model folders (default: all)")
    g.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="PyTorch checkpoint for model NAME (default: searched, see bench/torch_models.py)",
    )
    g.add_argument("--batch-sizes", type=_ints, default=[1, 8, 16, 32, 64])
    g.add_argument("--gpu-batch-sizes", type=_ints, default=[1, 8, 16, 32, 64, 128, 256])
    g.add_argument(
        "--threads",
        type=_ints,
        default=sorted({1, cores}),
        help="intra-op threads for both runtimes (default 1 and all cores)",
    )
    g.add_argument(
        "--min-time", type=float, default=1.0, help="seconds per runtime and batch size (at least 3 calls)"
    )
    g.add_argument("--no-gpu", action="store_true", help="skip the GPU rows even with a GPU")
    g = p.add_argument_group("pipeline")
    g.add_argument("--clip", default=PIPELINE_CLIP, help="clip for the bare loop and POST /recognize")
    g.add_argument("--clip-seconds", type=float, default=None, help="use only the clip's first seconds")
    g.add_argument("--repeats", type=int, default=2, help="alternating bare / service runs")
    g.add_argument("--model", default=None, help="model the server uses (default: its default)")
    g.add_argument(
        "--clip-lanes",
        type=int,
        default=2,
        help="also time POST /recognize on a second server with SKELACT_CLIP_POSE_LANES=N (<= 1: skip)",
    )
    g = p.add_argument_group("stream")
    g.add_argument("--stream-clip", default=STREAM_CLIP)
    g.add_argument("--clients", type=_ints, default=[1, 2, 4, 8])
    g.add_argument("--fps", type=_floats, default=[15.0, 30.0])
    g.add_argument("--stream-seconds", type=float, default=10.0, help="sending time per scenario")
    g.add_argument("--drain", type=float, default=5.0, help="max wait for the last reply")
    g.add_argument(
        "--ws-deflate",
        action="store_true",
        help="negotiate permessage-deflate as browsers do (default: off, JPEGs do not compress)",
    )
    g = p.add_argument_group("capacity (a pod's streams and clips per core)")
    g.add_argument("--cores", type=int, default=cores, help="CPU cores of the pod the server is pinned to")
    g.add_argument("--capacity-fps", type=float, default=15.0, help="frames per second of each stream")
    g.add_argument("--step-seconds", type=float, default=20.0, help="sending time per stream count")
    g.add_argument("--latency-p95-ms", type=float, default=150.0, help="round-trip p95 target per stream")
    g.add_argument("--max-drop", type=float, default=0.05, help="share of frames the server may drop")
    g.add_argument("--max-clients", type=int, default=None, help="stop the ramp here (default 4 x cores)")
    g = p.add_argument_group("tracking")
    g.add_argument(
        "--tracking-clips",
        default=None,
        help="comma-separated labelled clips (data paths or stems; default: all in groundtruth/clips.json)",
    )
    g.add_argument("--tracking-rates", type=_floats, default=[10.0, 15.0], help="stream rates, frames/s")
    g.add_argument(
        "--tracking-views", default="clip,stream", help="clip (POST /recognize's tracks), stream (WS /stream)"
    )
    return p


QUICK = {
    "batch_sizes": [1, 16],
    "gpu_batch_sizes": [1, 16, 256],
    "threads": [1],
    "min_time": 0.3,
    "clip_seconds": 2.0,
    "repeats": 1,
    "clients": [1, 2],
    "fps": [15.0],
    "stream_seconds": 2.0,
    "drain": 2.0,
    "tracking_clips": "clips/mmaction2_demo_skeleton.mp4",
    "tracking_rates": [10.0],
    "step_seconds": 2.0,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = set(args.sections) - {*SECTIONS, "all", "report"}
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {[*SECTIONS, 'all', 'report']}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.quick:
        defaults = parser.parse_args([])
        for k, v in QUICK.items():
            if getattr(args, k) == getattr(defaults, k):  # explicit flags win
                setattr(args, k, v)
    os.environ.update(_pairs(args.set, "--set"))
    wanted = set(args.sections) or {"all"}
    run = set(DEFAULT_SECTIONS) if "all" in wanted else wanted & set(SECTIONS)
    out: Path = args.out.resolve()
    _writable_or_exit(out)
    docs = args.docs if args.docs is not None else out == REPO_OUT.resolve()
    results = _load(out / "results.json")
    if run:
        command = "python -m bench " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        results.update({"machine": machine_info(), "command": command.strip(), "quick": bool(args.quick)})
        sections = results.setdefault("sections", {})
        t0, jiffies = time.perf_counter(), cpu_jiffies()
        sections.update(run_sections(args, run, out))
        results["wall_s"] = round(time.perf_counter() - t0, 1)
        results["cpu_steal_percent"] = steal_percent(jiffies, cpu_jiffies())
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    elif not results:
        parser.error(f"nothing to report: no {out / 'results.json'}")
    write_report(results, out, plots=not args.no_plots, docs=docs)
    return 0


def run_sections(args: argparse.Namespace, run: set[str], out: Path) -> dict[str, Any]:
    from bench.pipeline import bare_loop, run_lanes_rows, run_pipeline_bench
    from bench.server import launch_server
    from service.core.config import Settings

    settings = Settings()
    models_dir = (args.models_dir or settings.models_dir).resolve()
    server_env = {"SKELACT_MODELS_DIR": str(models_dir)}
    if args.model:
        server_env["SKELACT_DEFAULT_MODEL"] = args.model
    done: dict[str, Any] = {}
    frames: list[Any] = []
    with _clip(args.clip, args.clip_seconds) as clip:
        if run & {"pipeline", "stream", "tracking"}:
            log.info("starting the service (models from %s)", models_dir)
            with launch_server(server_env, log_path=out / "server.log") as server:
                log.info("service ready at %s: %s", server.url, server.ready)
                if "pipeline" in run:
                    log.info("pipeline: bare loop vs POST /recognize on %s", clip)
                    done["pipeline"], frames = run_pipeline_bench(
                        server, clip, settings, args.repeats, args.model
                    )
                if "stream" in run:
                    from bench.streaming import run_stream_bench

                    log.info("stream: clients %s at %s fps", args.clients, args.fps)
                    done["stream"] = run_stream_bench(
                        server,
                        resolve_clip(args.stream_clip),
                        args.clients,
                        args.fps,
                        args.stream_seconds,
                        args.drain,
                        args.model,
                        deflate=args.ws_deflate,
                        settings=settings,
                    )
                if "tracking" in run:
                    done["tracking"] = _tracking(args, server)
        lanes = args.clip_lanes
        if "pipeline" in run and lanes > 1 and int(os.environ.get("SKELACT_CLIP_POSE_LANES", "0")) != lanes:
            lanes_env = {**server_env, "SKELACT_CLIP_POSE_LANES": str(lanes)}
            log.info("pipeline: POST /recognize with %d pose lanes per clip (a second server)", lanes)
            with launch_server(lanes_env, log_path=out / "server-lanes.log") as server:
                done["pipeline"]["lanes"] = run_lanes_rows(
                    server, clip, settings, lanes, args.repeats, args.model
                )
        if "capacity" in run:
            from bench.capacity import run_capacity_bench

            log.info("capacity: a pod of %d core(s), streams at %g fps", args.cores, args.capacity_fps)
            done["capacity"] = run_capacity_bench(
                clip,
                resolve_clip(args.stream_clip),
                args.cores,
                fps=args.capacity_fps,
                step_s=args.step_seconds,
                target_p95_ms=args.latency_p95_ms,
                max_drop=args.max_drop,
                max_clients=args.max_clients,
                model=args.model,
                server_env=server_env,
                log_path=out / "server-capacity.log",
            )
        if "classifier" in run:
            from bench.classifier import run_classifier_bench

            if not frames:  # real windows need real poses: a few seconds of the clip
                log.info("classifier: pose on the first frames of %s for real input windows", clip)
                _, frames = bare_loop(clip, settings, max_frames=90)
            names = [n for n in (args.models or "").split(",") if n] or None
            checkpoints = {k: Path(v) for k, v in _pairs(args.checkpoint, "--checkpoint").items()}
            done["classifier"] = run_classifier_bench(
                models_dir,
                frames,
                names,
                args.batch_sizes,
                args.threads,
                args.min_time,
                min_calls=3,
                cache=out / "trt_cache",
                checkpoints=checkpoints,
                gpu=False if args.no_gpu else None,
                gpu_batches=args.gpu_batch_sizes,
            )
    return done


def _tracking(args: argparse.Namespace, server: Any) -> dict[str, Any]:
    from bench.tracking import run_tracking_bench

    clips = [c for c in (args.tracking_clips or "").split(",") if c] or None
    views = [v for v in args.tracking_views.split(",") if v]
    log.info("tracking: views %s on %s", views, clips or "every labelled clip")
    save = args.out.resolve() / "tracking"
    return run_tracking_bench(server, clips, args.tracking_rates, views, args.model, save)


@contextlib.contextmanager
def _clip(name: str, seconds: float | None) -> Iterator[Path]:
    src = resolve_clip(name)
    if not seconds:
        yield src
        return
    with tempfile.TemporaryDirectory(prefix="skelact-bench-") as tmp:
        yield trim_clip(src, Path(tmp) / f"{src.stem}-{seconds:g}s.mp4", seconds)


def _load(path: Path) -> dict[str, Any]:
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {}


def write_report(results: dict[str, Any], out: Path, plots: bool = True, docs: bool = False) -> str:
    from bench.report import render_markdown, update_docs, write_plots

    if plots:
        write_plots(results, out)
    md = render_markdown(results)
    (out / "report.md").write_text("# Benchmark results\n\n" + md)
    print(md)
    if docs:
        try:
            prefix = os.path.relpath(out, DOCS.parent) + "/"
        except ValueError:
            prefix = str(out) + "/"
        if update_docs(DOCS, render_markdown(results, img_prefix=prefix)):
            log.info("updated %s", DOCS)
    return md


if __name__ == "__main__":
    raise SystemExit(main())
