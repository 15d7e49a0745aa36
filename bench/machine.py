"""What the numbers were measured on: CPU, cores, memory, load, GPU and library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from typing import Any

PACKAGES = (
    "onnxruntime-gpu",
    "onnxruntime",
    "torch",
    "mediapipe",
    "numpy",
    "opencv-contrib-python",
    "fastapi",
    "uvicorn",
    "websockets",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def nvidia_gpus() -> list[str]:
    """``name, memory, driver`` of each NVIDIA GPU that ``nvidia-smi`` can see (empty: none)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        res = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if res.returncode != 0:
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def gpu_available() -> bool:
    """An NVIDIA GPU is present and this onnxruntime build has the CUDA provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and bool(nvidia_gpus())


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of the whole machine from /proc/stat; None off Linux.

    On a shared virtual machine the hypervisor runs other guests on "our" cores; that time (steal)
    stretches every timing here, so a run records how much of it there was.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def machine_info() -> dict[str, Any]:
    import psutil

    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except ImportError:
        providers = []
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": load_average(),
        "gpus": nvidia_gpus(),
        "ort_providers": providers,
        "versions": _versions(),
    }


def describe(info: dict[str, Any]) -> str:
    """One markdown line for a report."""
    v = info.get("versions", {})
    ort_v = v.get("onnxruntime-gpu") or v.get("onnxruntime") or "?"
    gpus = "; ".join(info.get("gpus") or []) or "no GPU"
    return (
        f"{info.get('cpu')} ({info.get('usable_cores')} usable / {info.get('logical_cores')} logical cores), "
        f"{info.get('ram_gib')} GiB RAM, {gpus}; load average at start {info.get('load_average')}; "
        f"Python {v.get('python')}, onnxruntime {ort_v}, torch {v.get('torch', 'n/a')}, "
        f"mediapipe {v.get('mediapipe', 'n/a')}, numpy {v.get('numpy', 'n/a')}, "
        f"opencv {v.get('opencv-contrib-python', 'n/a')}; {info.get('platform')}"
    )
