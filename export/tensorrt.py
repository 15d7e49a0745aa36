"""Build TensorRT engines for every exported model, on a machine with an NVIDIA GPU.

Uses ONNX Runtime's TensorrtExecutionProvider with exactly the provider options the service uses
(``service.classifier.choose_providers``: engine cache in ``<model>/trt_cache``, batch profile
1..64), so the service later loads the cached engine instead of building it at start-up.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skeleton.layouts import get_layout
from skeleton.manifest import MANIFEST_FILE, load_manifest

log = logging.getLogger("export.tensorrt")

TRT = "TensorrtExecutionProvider"
MAX_BATCH = 64  # the service's micro-batcher maximum (service.classifier max_batch_hint)


class TensorRTUnavailable(RuntimeError):
    """No NVIDIA GPU, or this onnxruntime build cannot run TensorRT."""


@dataclass(frozen=True)
class EngineReport:
    model: str
    engine_files: list[str]
    max_abs_error_vs_cpu: float
    fp16: bool


def check_gpu() -> None:
    """Raise ``TensorRTUnavailable`` with the reason when TensorRT engines cannot be built here."""
    exe = shutil.which("nvidia-smi")
    if not exe or subprocess.run([exe], capture_output=True).returncode != 0:
        raise TensorRTUnavailable("no NVIDIA GPU found (nvidia-smi missing or failing): building TensorRT "
                                  "engines needs a machine with an NVIDIA GPU, CUDA and TensorRT")
    import onnxruntime as ort

    if TRT not in ort.get_available_providers():
        raise TensorRTUnavailable(f"onnxruntime {ort.__version__} has no {TRT}: install onnxruntime-gpu "
                                  "with TensorRT libraries")


def build_engine(model_dir: Path, workspace_gb: float = 2.0, fp16: bool = True,
                 windows: np.ndarray | None = None) -> EngineReport:
    """Create the TensorRT session (builds + caches the engine) and compare it with CPU."""
    import onnxruntime as ort

    from service.classifier import choose_providers

    manifest = load_manifest(model_dir)
    spec = manifest.input
    dims = (spec.channels, spec.window.length, get_layout(spec.layout).num_joints)
    profile = (manifest.onnx.input_name, dims, MAX_BATCH)
    providers, _ = choose_providers(["tensorrt"], model_dir, None, fp16, profile)
    for p in providers:
        if isinstance(p, tuple) and p[0] == TRT:
            p[1]["trt_max_workspace_size"] = int(workspace_gb * (1 << 30))
            Path(p[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    onnx_path = model_dir / manifest.onnx.file
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    if sess.get_providers()[0] != TRT:
        raise TensorRTUnavailable(f"{model_dir.name}: ONNX Runtime fell back to {sess.get_providers()}; "
                                  "TensorRT could not be initialised (check CUDA/TensorRT libraries)")
    cpu = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if windows is None:
        windows = np.random.default_rng(0).normal(0, 0.5, (8, *dims)).astype(np.float32)
    name = manifest.onnx.input_name
    err = 0.0
    for n in (1, len(windows)):  # every batch size inside the profile hits the same engine
        a = sess.run(None, {name: windows[:n]})[0]
        b = cpu.run(None, {name: windows[:n]})[0]
        err = max(err, float(np.abs(a - b).max()))
    cache = model_dir / "trt_cache"
    engines = sorted(p.name for p in cache.glob("*.engine"))
    if not engines:
        raise RuntimeError(f"{model_dir.name}: TensorRT ran but wrote no engine to {cache}")
    return EngineReport(manifest.name, engines, err, fp16)


def build_all(models_dir: Path, workspace_gb: float = 2.0, fp16: bool = True) -> list[EngineReport]:
    check_gpu()
    dirs = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST_FILE}"))
    if not dirs:
        raise FileNotFoundError(f"no */{MANIFEST_FILE} under {models_dir}: export models first")
    return [build_engine(d, workspace_gb, fp16) for d in dirs]
