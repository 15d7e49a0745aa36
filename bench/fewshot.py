"""Few-shot costs on CPU: embed a window, enrol an example, classify a window against N labels x M examples.

    python -m bench.fewshot [model_zoo/embeddings/<name>] [--labels 5 20 100] [--examples 1 5 20] [--out FILE]

The embedding runs on ONNX Runtime (CPUExecutionProvider, ``--threads`` intra-op threads, 1 by
default as the service's per-model sessions) on real windows (UTD-MHAD clips cut by the service's
window schedule). "Classify" is the whole per-window cost once the window is embedded: cosine to
every prototype, the best one, the softmax confidence and the unknown test (``skeleton.prototypes``);
"enrol" is embedding an example's windows (a 3 s segment is 5 windows) plus rebuilding its label's
prototype from M examples. Medians of ``--calls`` calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from skeleton.manifest import load_manifest
from skeleton.paths import REPO_ROOT, data_root
from skeleton.prototypes import PrototypeSet, pool

DEFAULT_MODEL = REPO_ROOT / "model_zoo" / "embeddings" / "utd-mhad-stgcnpp-lite-embedding"
EXAMPLE_WINDOWS = 5  # a 3 s example at the default stride (32 frames at 15 fps, every 4 frames)


def median_ms(fn: Callable[[], Any], calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def real_windows(model_dir: Path, count: int) -> np.ndarray:
    from training.metric_learning import utd_windows
    from training.utd_mhad import load_utd_mhad

    spec = load_manifest(model_dir).input
    clips = load_utd_mhad(data_root(), {2})
    return np.concatenate([utd_windows(c, spec) for c in clips[::4]])[:count]


def run(model_dir: Path, labels: list[int], examples: list[int], calls: int, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    m = load_manifest(model_dir)
    if m.embedding is None:
        raise SystemExit(f"{model_dir} is not an embedding model")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(
        str(model_dir / m.onnx.file), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    windows = real_windows(model_dir, 64)
    one, example = windows[:1], windows[:EXAMPLE_WINDOWS]

    def embed(x: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run([m.onnx.output_name], {m.onnx.input_name: x})[0])

    vecs = embed(windows)
    scale = m.embedding.logit_scale
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {
        "model": m.name,
        "threads": threads,
        "calls": calls,
        "machine": machine_info(),
        "embed_window_ms": median_ms(lambda: embed(one), calls),
        "embed_example_ms": median_ms(lambda: pool(embed(example)), calls),
        "example_windows": EXAMPLE_WINDOWS,
        "classify": [],
    }
    threshold = m.open_set.threshold if m.open_set else None
    for n in labels:
        for k in examples:
            bank = {f"label{i}": vecs[rng.integers(0, len(vecs), k)] for i in range(n)}
            protos = PrototypeSet.from_examples(bank)
            query = vecs[:1]
            result["classify"].append(
                {
                    "labels": n,
                    "examples_per_label": k,
                    "classify_ms": median_ms(partial(protos.predict, query, threshold, scale), calls),
                    "rebuild_prototypes_ms": median_ms(
                        partial(PrototypeSet.from_examples, bank), max(5, calls // 10)
                    ),
                }
            )
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Embedding `{r['model']}`, ONNX Runtime CPU, {r['threads']} thread(s), "
        f"median of {r['calls']} calls:",
        "",
        f"- embed one window: **{r['embed_window_ms']:.2f} ms**",
        f"- enrol one example ({r['example_windows']} windows embedded + pooled): "
        f"**{r['embed_example_ms']:.2f} ms**",
        "",
        "| labels N | examples per label M | classify one embedded window (ms) | "
        "rebuild all prototypes (ms) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['labels']} | {c['examples_per_label']} | {c['classify_ms']:.3f} | "
        f"{c['rebuild_prototypes_ms']:.3f} |"
        for c in r["classify"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fewshot", description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--labels", type=int, nargs="*", default=[5, 20, 100])
    ap.add_argument("--examples", type=int, nargs="*", default=[1, 5, 20])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    r = run(args.model, args.labels, args.examples, args.calls, args.threads)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(r, indent=1))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
