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

from service import providers as host_providers
from service.engine_cache import (
    BatchProfile,
    cache_root,
    engine_dir,
    engine_key,
    load_or_build,
    writable_dir,
)
from service.providers import ORT_NAMES as _ORT_NAMES
from service.providers import SHORT_NAMES as _SHORT
from skeleton.manifest import ModelManifest
from skeleton.open_set import open_set_score

log = logging.getLogger(__name__)


def score_name(manifest: ModelManifest) -> str:
    """The open-set score of a classifier's windows: the manifest's, else the top probability."""
    return manifest.open_set.score if manifest.open_set is not None else "max_softmax"


def _user_cache() -> Path:
    return Path(os.environ.get("SKELACT_CACHE_DIR") or Path.home() / ".cache" / "skelact")


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
    available: list[str]  # the requested providers that really run on this host (`service.providers`)
    used: list[str]


def tensorrt_options(
    engine_dir: Path | None, fp16: bool, profile: tuple[str, tuple[int, ...], BatchProfile] | None
) -> dict[str, Any]:
    """TensorRT provider options: engines cached in ``engine_dir`` (None: in memory only)."""
    cache: dict[str, Any] = {"trt_engine_cache_enable": False, "trt_timing_cache_enable": False}
    if engine_dir is not None:
        cache = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engine_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engine_dir),
        }
    opts: dict[str, Any] = {**cache, "trt_fp16_enable": fp16}
    if profile is not None:  # one engine for every batch size up to the batcher's maximum
        name_in, dims, batch = profile
        tail = "x".join(str(d) for d in dims)
        opts["trt_profile_min_shapes"] = f"{name_in}:{batch.min}x{tail}"
        opts["trt_profile_opt_shapes"] = f"{name_in}:{batch.opt}x{tail}"
        opts["trt_profile_max_shapes"] = f"{name_in}:{batch.max}x{tail}"
    return opts


def choose_providers(
    requested: list[str], trt: dict[str, Any] | None = None
) -> tuple[list[str | tuple[str, dict[str, Any]]], ProviderChoice]:
    """ORT provider list in the requested order, skipping those that cannot run on this host
    (`service.providers.unusable`: not compiled in, no GPU, libraries missing), so ORT never
    prints its load errors; TensorRT also when ``trt`` (its options) is None."""
    available = host_providers.usable(list(requested))
    out: list[str | tuple[str, dict[str, Any]]] = []
    for short in available:
        name = _ORT_NAMES[short]
        if short != "tensorrt":
            out.append(name)
        elif trt is not None:
            out.append((name, trt))
    if "CPUExecutionProvider" not in [p if isinstance(p, str) else p[0] for p in out]:
        out.append("CPUExecutionProvider")  # ORT falls back to it anyway; make it explicit
    return out, ProviderChoice(list(requested), available, [])


def _batch_profile(manifest: ModelManifest, max_batch: int) -> BatchProfile | None:
    """A dynamic batch axis gets one profile up to ``max_batch``; a fixed one needs none."""
    first = manifest.onnx.input_shape[0] if manifest.onnx.input_shape else None
    return None if isinstance(first, int) else BatchProfile.up_to(max_batch)


def trt_engine_dir(
    model_dir: Path, manifest: ModelManifest, trt_cache_dir: Path | None, fp16: bool, max_batch: int
) -> Path:
    """This model's TensorRT engine folder for these settings: the service, the export and the
    bench all ask here, so the export writes where the service reads. Creates nothing."""
    import onnxruntime as ort

    profile = _batch_profile(manifest, max_batch)
    key = engine_key(manifest.name, model_dir / manifest.onnx.file, fp16, profile, ort.__version__)
    return engine_dir(cache_root(model_dir, trt_cache_dir), key)


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
        trt_extra: dict[str, Any] | None = None,
    ) -> None:
        import onnxruntime as ort

        from skeleton.layouts import get_layout

        self.manifest = manifest
        spec = manifest.input
        dims = (spec.channels, spec.window.length, get_layout(spec.layout).num_joints)
        path = model_dir / manifest.onnx.file
        # TensorRT: the engine folder of these settings (reported even where TensorRT cannot run);
        # made, locked and checked only when TensorRT is really going to be used.
        self.engine_dir: Path | None = None
        trt: dict[str, Any] | None = None
        if "tensorrt" in requested and _ORT_NAMES["tensorrt"] in ort.get_available_providers():
            self.engine_dir = trt_engine_dir(model_dir, manifest, trt_cache_dir, trt_fp16, max_batch_hint)
            if host_providers.unusable("tensorrt") is None:  # else no engine folder is made
                fallback = _user_cache() / "trt" / self.engine_dir.relative_to(self.engine_dir.parents[1])
                self.engine_dir = writable_dir([self.engine_dir, fallback])
                batch = _batch_profile(manifest, max_batch_hint)
                profile = None if batch is None else (manifest.onnx.input_name, dims, batch)
                trt = {**tensorrt_options(self.engine_dir, trt_fp16, profile), **(trt_extra or {})}
        providers, choice = choose_providers(requested, trt)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3

        def open_session() -> Any:
            return ort.InferenceSession(str(path), sess_options=opts, providers=providers)

        def engine_ran(session: Any) -> bool:
            """Warm-up before the engine is recorded complete: both ends of the batch profile."""
            if session.get_providers()[0] != _ORT_NAMES["tensorrt"]:
                return False
            inp = session.get_inputs()[0]
            ends = {inp.shape[0]} if isinstance(inp.shape[0], int) else {1, max_batch_hint}
            for n in sorted(ends):
                session.run(None, {inp.name: np.zeros((n, *dims), np.float32)})
            return True

        try:
            if trt is not None and self.engine_dir is not None:
                self._session = load_or_build(self.engine_dir, open_session, engine_ran)
            else:
                self._session = open_session()
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
        """A GPU provider was asked for and runs on this host, yet the session runs on CPU."""
        gpu_here = any(p in host_providers.GPU_PROVIDERS for p in self.choice.available)
        return gpu_here and self._provider == "cpu"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities; an embedding model's unit vectors as they come out."""
        raw = self.predict_raw(windows)
        return raw if self.manifest.kind == "embedding" else softmax(raw)

    def predict_scored(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`predict` and each window's open-set score (`service.open_set.score_name`; None for an
        embedding, whose score depends on the enrolled prototypes)."""
        raw = self.predict_raw(windows)
        if self.manifest.kind == "embedding":
            return raw, None
        return softmax(raw), open_set_score(score_name(self.manifest), raw).astype(np.float32)

    def predict_raw(self, windows: np.ndarray) -> np.ndarray:
        """The graph's output (logits, or an embedding) as float32."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self._max_batch is not None and x.shape[0] != self._max_batch:
            return self._predict_fixed(x)
        return np.asarray(self._session.run([self._output_name], {self._input_name: x})[0], np.float32)

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
        return np.concatenate(outs).astype(np.float32)
