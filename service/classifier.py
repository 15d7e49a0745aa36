"""Classify model windows: the ``ClassifierRuntime`` protocol and its ONNX Runtime adapter.

Windows come in as (N, C, T, V) float32 from ``skeleton.preprocess.prepare_window``; class
probabilities go out as (N, K). ONNX Runtime types stay inside this module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from skeleton.manifest import ModelManifest

log = logging.getLogger(__name__)

_ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_SHORT = {v: k for k, v in _ORT_NAMES.items()}


class ClassifierRuntime(Protocol):
    """Anything that turns a batch of windows into class probabilities."""

    @property
    def provider(self) -> str:
        """Short name of the execution provider that really runs the model (``cuda``, ``cpu``…)."""
        ...

    @property
    def max_batch(self) -> int | None:
        """Largest batch one call accepts (None: any)."""
        ...

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """(N, C, T, V) float32 -> (N, K) probabilities summing to 1."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class ProviderChoice:
    requested: list[str]
    available: list[str]
    used: list[str]


def choose_providers(
    requested: list[str],
    model_dir: Path,
    trt_cache_dir: Path | None = None,
    trt_fp16: bool = True,
    profile: tuple[str, tuple[int, ...], int] | None = None,
) -> tuple[list[str | tuple[str, dict[str, Any]]], ProviderChoice]:
    """ORT provider list in the requested order, skipping those this onnxruntime build lacks."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out: list[str | tuple[str, dict[str, Any]]] = []
    for short in requested:
        name = _ORT_NAMES[short]
        if name not in available:
            continue
        if short == "tensorrt":
            cache = trt_cache_dir or (model_dir / "trt_cache")
            opts: dict[str, Any] = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": trt_fp16,
            }
            if profile is not None:  # one engine for every batch size up to the batcher's maximum
                name_in, dims, max_n = profile
                tail = "x".join(str(d) for d in dims)
                opts["trt_profile_min_shapes"] = f"{name_in}:1x{tail}"
                opts["trt_profile_opt_shapes"] = f"{name_in}:{max(1, min(8, max_n))}x{tail}"
                opts["trt_profile_max_shapes"] = f"{name_in}:{max_n}x{tail}"
            out.append((name, opts))
        else:
            out.append(name)
    if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in out]:
        out.append("CPUExecutionProvider")  # ORT falls back to it anyway; make it explicit
    return out, ProviderChoice(list(requested), [_SHORT.get(a, a) for a in available], [])


def _writable_cache(preferred: Path, model: str) -> dict[str, str]:
    """The TensorRT cache folder, or a user cache when the model folder is read-only (a volume)."""
    for cand in (
        preferred,
        Path(os.environ.get("SKELACT_CACHE_DIR") or Path.home() / ".cache" / "skelact") / "trt" / model,
    ):
        try:
            cand.mkdir(parents=True, exist_ok=True)
            probe = cand / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            continue
        if cand != preferred:
            log.warning("%s is not writable; caching TensorRT engines in %s", preferred, cand)
        return {"trt_engine_cache_path": str(cand), "trt_timing_cache_path": str(cand)}
    return {"trt_engine_cache_enable": "False"}


class OnnxClassifier:
    """ONNX Runtime session for one exported model; reports the provider actually in use."""

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        requested: list[str],
        threads: int = 1,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = True,
        max_batch_hint: int = 64,
    ) -> None:
        import onnxruntime as ort

        from skeleton.layouts import get_layout

        self.manifest = manifest
        spec = manifest.input
        dims = (spec.channels, spec.window.length, get_layout(spec.layout).num_joints)
        first = manifest.onnx.input_shape[0] if manifest.onnx.input_shape else None
        profile = None if isinstance(first, int) else (manifest.onnx.input_name, dims, max_batch_hint)
        providers, choice = choose_providers(requested, model_dir, trt_cache_dir, trt_fp16, profile)
        for p in providers:
            if isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider":
                p[1].update(_writable_cache(Path(p[1]["trt_engine_cache_path"]), manifest.name))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        path = model_dir / manifest.onnx.file
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # a GPU provider that fails to initialise: fall back, loudly
            if providers == ["CPUExecutionProvider"]:
                raise
            log.warning("%s: providers %s failed (%s); falling back to CPU", manifest.name, providers, exc)
            self._session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        used = [_SHORT.get(p, p) for p in self._session.get_providers()]
        self.choice = ProviderChoice(choice.requested, choice.available, used)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self._session.get_outputs()[0].name
        first = inp.shape[0]
        self._max_batch = first if isinstance(first, int) and first > 0 else None
        # ORT adds CPU to every session's list for unsupported ops; the first one runs the graph.
        self._provider = used[0] if used else "cpu"

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def providers(self) -> list[str]:
        return list(self.choice.used)

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def graph_io(self) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
        """(name, shape) of the graph's first input and output, as the ONNX file declares them."""
        i, o = self._session.get_inputs()[0], self._session.get_outputs()[0]
        return (i.name, list(i.shape)), (o.name, list(o.shape))

    @property
    def gpu_fell_back(self) -> bool:
        """A GPU provider was asked for and is available, yet the session runs on CPU."""
        asked_gpu = any(p in ("tensorrt", "cuda") for p in self.choice.requested)
        return asked_gpu and self._provider == "cpu"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self._max_batch is not None and x.shape[0] != self._max_batch:
            return self._predict_fixed(x)
        logits = self._session.run([self._output_name], {self._input_name: x})[0]
        return softmax(np.asarray(logits, np.float32))

    def _predict_fixed(self, x: np.ndarray) -> np.ndarray:
        """Models exported with a fixed batch size: pad and split."""
        assert self._max_batch is not None
        b = self._max_batch
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.float32)])
            outs.append(self._session.run([self._output_name], {self._input_name: chunk})[0][:n])
        return softmax(np.concatenate(outs).astype(np.float32))
