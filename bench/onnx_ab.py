"""Is a re-exported graph faster? Two ONNX files of one model, timed in alternating rounds.

    python -m bench.onnx_ab model_zoo/upfall-stgcnpp-lite [--threads 1] [--batch 16] [--rounds 10]
    python -m bench.onnx_ab OLD.onnx NEW.onnx

With a model folder, the folder's ``model.onnx`` is compared with its ``checkpoint.pt`` exported
now by ``export.fuse.fuse_for_inference`` (what ``python -m export onnx`` would write): the way
to check an export rewrite before re-exporting the zoo. Rounds alternate (A B, B A, ...) and last
``--round-s`` each (timed as the classifier section times, ``bench.classifier.time_interleaved``),
so a change in the host's load hits both; the median of the round medians is reported with every
round, and the outputs of A and B are compared.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.classifier import time_interleaved


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_current(model_dir: Path, out: Path) -> Path:
    """``model_dir``'s checkpoint exported with today's rewrite (no parity gate, no manifest)."""
    import torch

    from export.fuse import fuse_for_inference
    from export.onnx_export import export_onnx
    from skeleton.layouts import get_layout
    from training.checkpoint import load_checkpoint

    ck = load_checkpoint(model_dir / "checkpoint.pt")
    cfg = ck.config
    shape = (2, cfg.input.channels, cfg.input.window.length, get_layout(cfg.input.layout).num_joints)
    export_onnx(fuse_for_inference(ck.model.eval()), torch.randn(*shape), out)
    return out


def compare(a: Path, b: Path, threads: int, batch: int, rounds: int, round_s: float) -> dict[str, Any]:
    """Median call time of each file (ms) over alternating rounds, and the largest output gap."""
    sessions = {"A": _session(a, threads), "B": _session(b, threads)}
    inp = sessions["A"].get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outs = {k: s.run(None, {inp.name: x})[0] for k, s in sessions.items()}
    rounds_ms: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        calls = [partial(sessions[key].run, None, {inp.name: x}) for key in order]
        for key, times in zip(order, time_interleaved(calls, round_s, 3, rounds=1), strict=True):
            rounds_ms[key].append(1e3 * float(np.median(times)))
    med = {k: float(np.median(v)) for k, v in rounds_ms.items()}
    return {
        "A": str(a), "B": str(b), "threads": threads, "batch": batch,
        "median_ms": med, "rounds_ms": rounds_ms, "b_over_a": med["B"] / med["A"],
        "max_abs_output_diff": float(np.abs(outs["A"] - outs["B"]).max()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.onnx_ab", description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="a model folder, or two .onnx files")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--round-s", type=float, default=0.5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if len(args.paths) == 1 and args.paths[0].is_dir():
            a, b = args.paths[0] / "model.onnx", export_current(args.paths[0], Path(tmp) / "current.onnx")
        elif len(args.paths) == 2:
            a, b = args.paths
        else:
            ap.error("give a model folder (with model.onnx and checkpoint.pt) or two .onnx files")
        res = compare(a, b, args.threads, args.batch, args.rounds, args.round_s)
    med = res["median_ms"]
    print(f"A {a}: {med['A']:.2f} ms   B {b}: {med['B']:.2f} ms   B/A {res['b_over_a']:.3f}")
    print(f"batch {args.batch}, {args.threads} thread(s), {args.rounds} alternating rounds of "
          f"{args.round_s} s; largest output difference {res['max_abs_output_diff']:.2g}")
    for key in ("A", "B"):
        print(key, "rounds (ms):", " ".join(f"{v:.1f}" for v in res["rounds_ms"][key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
