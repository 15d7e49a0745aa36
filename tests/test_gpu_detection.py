"""The suite's GPU rule (tests/conftest.py): GPU tests are skipped on a host without a GPU, and fail
with the reason on a GPU host whose CUDA set-up is broken (a skip there would hide the breakage).

A GPU host is staged, in a pytest subprocess, with a stand-in ``nvidia-smi`` that lists a GPU; its
CUDA set-up is broken either way: this host has no GPU, and ``CUDA_VISIBLE_DEVICES=-1`` hides any
real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, gpu_available, gpu_host, gpu_status

PROBE = '''
import pytest

@pytest.mark.gpu
def test_needs_a_gpu():
    pass

def test_checks_the_provider():
    from tests.conftest import gpu_available
    assert gpu_available() in (True, False)
'''


def _run(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-rA", "-p", "no:cacheprovider",
           "-c", str(REPO_ROOT / "pyproject.toml"), "--rootdir", str(REPO_ROOT), str(probe)]
    env = {**os.environ, "PATH": path, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_gpu_host_with_broken_cuda_fails_its_gpu_tests(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-stand-in)'\n")
    smi.chmod(0o755)
    proc = _run(tmp_path, f"{fake}:/usr/bin:/bin")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "1 failed, 1 error" in out, out[-3000:]  # the GPU test fails in its set-up
    assert "nvidia-smi lists GPU 0: NVIDIA H200" in out and "CUDA" in out, out[-3000:]


def test_a_host_without_a_gpu_skips_them() -> None:
    """This run's own verdict: on a host where nvidia-smi lists no GPU, nothing is broken, so the
    GPU tests get the skip marker (pytest_collection_modifyitems) and gpu_available() is False."""
    if gpu_host() is not None:
        pytest.skip(f"this host has a GPU ({gpu_host()})")
    assert gpu_status() == (False, "") and not gpu_available()
