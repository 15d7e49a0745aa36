"""Shared fixtures: where the real data lives, and skipping rules (never skip data in CI)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from skeleton.paths import REPO_ROOT, data_root

__all__ = ["REPO_ROOT", "data_root", "gpu_available", "gpu_providers", "gpu_status", "require_data"]


def require_data(*relative: str) -> Path:
    """Path under the data root; skip locally when absent, fail in CI (CI=true)."""
    path = data_root().joinpath(*relative)
    if not path.exists():
        message = f"real data missing: {path} (set SKELACT_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def gpu_host() -> str | None:
    """The first GPU ``nvidia-smi -L`` lists; None without nvidia-smi or without a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return gpus[0] if out.returncode == 0 and gpus else None


def _cuda_problem() -> str:
    """Why ONNX Runtime cannot run a session on CUDA here ("" when it can)."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except Exception as exc:
        return f"onnxruntime cannot be imported: {exc}"
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return (
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (it offers {available}): "
            "install the onnxruntime-gpu wheel the requirements pin"
        )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CUDAExecutionProvider"]
        )
        used = session.get_providers()
        session.run(None, {"x": np.ones(2, np.float32)})
    except Exception as exc:
        return f"a CUDA session failed: {type(exc).__name__}: {exc}"
    if used[0] != "CUDAExecutionProvider":
        return (
            f"a session asked for CUDA runs on {used}: ONNX Runtime could not load its CUDA provider "
            "(CUDA or cuDNN libraries missing or of the wrong version: its log says which)"
        )
    return ""


@functools.cache
def gpu_status() -> tuple[bool, str]:
    """(a usable GPU, what is broken): (False, "") on a host without a GPU."""
    gpu = gpu_host()
    if gpu is None:
        return False, ""
    problem = _cuda_problem()
    if problem:
        return False, f"nvidia-smi lists {gpu}, but {problem}"
    return True, ""


def gpu_available() -> bool:
    """True on a host whose GPU ONNX Runtime can use, False on a host without a GPU. On a GPU host
    whose CUDA set-up is broken the calling test fails with the reason: its GPU checks must not
    be skipped there."""
    usable, problem = gpu_status()
    if problem:
        pytest.fail(problem, pytrace=False)
    return usable


def gpu_providers() -> set[str]:
    """Where a model asked to run on ``tensorrt, cuda, cpu`` should run on this host."""
    return {"tensorrt", "cuda"} if gpu_available() else {"cpu"}


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
    if not any(item.get_closest_marker("gpu") is not None for item in items):
        return
    usable, problem = gpu_status()
    if usable or problem:  # a broken GPU host: they fail with the reason (pytest_runtest_setup)
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA/TensorRT)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        gpu_available()  # a GPU host whose CUDA set-up is broken: fail with the reason


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data()


@pytest.fixture(scope="session", autouse=True)
def _action_sets_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Apps and servers a test starts without their own sets folder keep action sets in pytest's
    temporary folders, not in the user's ~/.cache/skelact (subprocess servers inherit it)."""
    os.environ["SKELACT_ACTION_SETS_DIR"] = str(tmp_path_factory.mktemp("action-sets"))
