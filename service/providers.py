"""Which ONNX Runtime execution providers really work on this host, and why the others do not.

``onnxruntime-gpu`` lists TensorRT and CUDA as available wherever it is installed: they are compiled
in. Whether they run depends on the host: an NVIDIA driver with a GPU, and the CUDA, cuDNN (and
TensorRT) libraries their provider libraries link. Asked for one that cannot load, ORT prints about
ten lines of errors per session and falls back to CPU. So each GPU provider is tried here first,
loading its library as ORT would (ctypes), and skipped with one reason when it cannot run: the
service then says in one line which provider it runs on and why (`describe`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Sequence
from pathlib import Path

ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}
PRETTY = {"tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}
GPU_PROVIDERS = ("tensorrt", "cuda")


def _capi() -> Path:
    import onnxruntime as ort

    return Path(ort.__file__).parent / "capi"


@functools.cache
def driver_problem() -> str | None:
    """Why no NVIDIA GPU can be used by this process (None: one can)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver found (libcuda.so.1)"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "no NVIDIA GPU visible to this process"
    return None


@functools.cache
def gpu_provider_unusable(provider_lib: Path) -> str | None:
    """Why an ORT GPU provider library cannot run here (None: it can): no GPU, or the provider's
    libraries (CUDA, cuDNN, TensorRT) do not load. Checked before ORT is asked for it."""
    why = driver_problem()
    if why is not None:
        return why
    try:  # as ORT does: the shared bridge globally, then the provider with the libraries it links
        ctypes.CDLL(str(provider_lib.with_name("libonnxruntime_providers_shared.so")), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(provider_lib))
    except OSError as exc:
        return f"its libraries do not load ({exc})"
    return None


def unusable(short: str) -> str | None:
    """Why provider ``short`` (``tensorrt``, ``cuda``, ``cpu``) cannot run here; None when it can."""
    import onnxruntime as ort

    if ORT_NAMES[short] not in ort.get_available_providers():
        return f"not in this onnxruntime build ({ort.__version__})"
    if short == "cpu":
        return None
    return gpu_provider_unusable(_capi() / f"libonnxruntime_providers_{short}.so")


def usable(requested: Sequence[str]) -> list[str]:
    """The requested providers that really run on this host, in order (CPU always can)."""
    return [p for p in requested if unusable(p) is None] or ["cpu"]


def describe(requested: Sequence[str], running: str) -> str:
    """One line: which provider the models run on, and why not the ones preferred to it."""
    order = list(requested)
    skipped = order[: order.index(running)] if running in order else order
    names = " and ".join(PRETTY.get(p, p) for p in skipped)
    head = f"ONNX Runtime runs on {PRETTY.get(running, running)}"
    if not skipped:
        return head
    common = driver_problem()
    if common is not None:  # the usual CPU host: one reason for every GPU provider
        return f"{head}: {common}, so {names} {'is' if len(skipped) == 1 else 'are'} not used"
    reasons = []
    for p in skipped:
        why = unusable(p) or "failed to start (ONNX Runtime's error is in the log above)"
        reasons.append(f"{PRETTY.get(p, p)}: {why}")
    return f"{head}; not used: " + "; ".join(reasons)
