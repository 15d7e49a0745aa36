"""Shared fixtures: where the real data lives, and skipping rules (never skip data in CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from skeleton.paths import REPO_ROOT, data_root

__all__ = ["REPO_ROOT", "data_root", "gpu_available", "require_data"]


def require_data(*relative: str) -> Path:
    """Path under the data root; skip locally when absent, fail in CI (CI=true)."""
    path = data_root().joinpath(*relative)
    if not path.exists():
        message = f"real data missing: {path} (set SKELACT_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def gpu_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers() and _nvidia_smi_ok()
    except Exception:
        return False


def _nvidia_smi_ok() -> bool:
    import shutil

    exe = shutil.which("nvidia-smi")
    return exe is not None and subprocess.run([exe], capture_output=True).returncode == 0


_extraction: subprocess.Popen[bytes] | None = None


def _reads_skeleton_cache(item: pytest.Item) -> bool:
    return item.get_closest_marker("skeleton_cache") is not None


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the run includes tests that read the skeleton cache, start extracting its missing clips
    now (one pytest-xdist worker gets the lock; the others go on)."""
    global _extraction
    if any(_reads_skeleton_cache(item) for item in session.items):
        from tests.model_helpers import start_cache_extraction

        _extraction = start_cache_extraction()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """This worker is done (or the run was stopped): its extraction must not outlive it."""
    if _extraction is not None:
        from tests.model_helpers import stop_cache_extraction

        stop_cache_extraction(_extraction)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Files with tests that read the skeleton cache go last (a stable sort keeps the order within
    # and between files), so the background extraction has the rest of the suite to finish in.
    late = {item.path for item in items if _reads_skeleton_cache(item)}
    items.sort(key=lambda item: item.path in late)
    if gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA/TensorRT)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data()
