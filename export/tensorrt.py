"""Build TensorRT engines for every exported model, on a machine with an NVIDIA GPU.

The engines are built by the service's own classifier (``service.classifier.OnnxClassifier``) with
the service's settings (``SKELACT_TRT_CACHE_DIR``, ``SKELACT_TRT_FP16``, ``SKELACT_BATCH_MAX_SIZE``,
unless overridden), so they land in the folder the service later loads from
(``service.classifier.trt_engine_dir``), built by one process at a time and recorded complete
(``service.engine_cache``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.layouts import get_layout
from skeleton.manifest import MANIFEST_FILE, load_manifest

log = logging.getLogger("export.tensorrt")

TRT = "TensorrtExecutionProvider"


class TensorRTUnavailable(RuntimeError):
    """No NVIDIA GPU, or this onnxruntime build cannot run TensorRT."""


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is built for; the defaults are the service's (``service.core.config``)."""

    fp16: bool
    max_batch: int
    cache_dir: Path | None

    @classmethod
    def of_service(cls) -> EngineSettings:
        from service.core.config import Settings

        s = Settings()
        return cls(s.trt_fp16, s.batch_max_size, s.trt_cache_dir)


@dataclass(frozen=True)
class EngineReport:
    model: str
    engine_dir: str
    engine_files: list[str]
    max_abs_error_vs_cpu: float  # class probabilities, as the service returns them
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


def model_dirs(models_dir: Path) -> list[Path]:
    dirs = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST_FILE}"))
    if not dirs:
        raise FileNotFoundError(f"no */{MANIFEST_FILE} under {models_dir}: export models first")
    return dirs


def engine_plan(models_dir: Path, settings: EngineSettings) -> list[dict[str, Any]]:
    """Per model: the engine folder the service reads for these settings and the files recorded
    complete there (no GPU needed, nothing created)."""
    from service.classifier import trt_engine_dir
    from service.engine_cache import complete_files

    plan: list[dict[str, Any]] = []
    for d in model_dirs(models_dir):
        folder = trt_engine_dir(d, load_manifest(d), settings.cache_dir, settings.fp16, settings.max_batch)
        plan.append({"model": d.name, "engine_dir": str(folder), "complete": sorted(complete_files(folder))})
    return plan


def build_engine(model_dir: Path, settings: EngineSettings, workspace_gb: float = 2.0,
                 windows: np.ndarray | None = None) -> EngineReport:
    """Load or build the engine exactly as the service does, then compare it with CPU."""
    from service.classifier import OnnxClassifier

    manifest = load_manifest(model_dir)
    trt = OnnxClassifier(model_dir, manifest, ["tensorrt"], trt_cache_dir=settings.cache_dir,
                         trt_fp16=settings.fp16, max_batch_hint=settings.max_batch,
                         trt_extra={"trt_max_workspace_size": int(workspace_gb * (1 << 30))})
    if trt.provider != "tensorrt" or trt.engine_dir is None:
        raise TensorRTUnavailable(f"{model_dir.name}: ONNX Runtime runs on {trt.providers} without a "
                                  "TensorRT engine cache; see the log above (CUDA/TensorRT libraries, a "
                                  "writable SKELACT_TRT_CACHE_DIR)")
    cpu = OnnxClassifier(model_dir, manifest, ["cpu"])
    spec = manifest.input
    if windows is None:
        dims = (spec.channels, spec.window.length, get_layout(spec.layout).num_joints)
        windows = np.random.default_rng(0).normal(0, 0.5, (8, *dims)).astype(np.float32)
    err = 0.0
    for n in (1, len(windows)):  # every batch size inside the profile hits the same engine
        err = max(err, float(np.abs(trt.predict(windows[:n]) - cpu.predict(windows[:n])).max()))
    engines = sorted(p.name for p in trt.engine_dir.glob("*.engine"))
    if not engines:
        raise RuntimeError(f"{model_dir.name}: TensorRT ran but wrote no engine to {trt.engine_dir}")
    return EngineReport(manifest.name, str(trt.engine_dir), engines, err, settings.fp16)


def build_all(models_dir: Path, settings: EngineSettings, workspace_gb: float = 2.0) -> list[EngineReport]:
    check_gpu()
    return [build_engine(d, settings, workspace_gb) for d in model_dirs(models_dir)]
