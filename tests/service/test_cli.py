"""The command line as a user runs it: ``skelact recognize clip.mp4 > result.json`` from any folder.

The console command is installed (editable, as scripts/setup.sh does) into a throw-away virtual
environment that sees the project's packages, then run from an empty folder: stdout must be the
JSON and nothing else, and stderr must say in one line which provider runs the models and why,
without ONNX Runtime's provider errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from service.providers import driver_problem
from tests.conftest import REPO_ROOT, gpu_providers, require_data
from tests.service_helpers import trim_video

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ORT_NOISE = ("EP Error", "libcublas", "Failed to create CUDAExecutionProvider", "onnxruntime::")


@pytest.fixture(scope="module")
def skelact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``skelact`` installed editable into a fresh venv whose site-packages also sees this one's."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", "-e", str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    exe = venv / "bin" / "skelact"
    assert exe.is_file()
    return exe


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKELACT_") or k == "SKELACT_DATA_DIR"}
    env.pop("PYTHONPATH", None)  # the installed command must find the project by itself
    return env


def test_recognize_writes_only_json_to_stdout_from_any_folder(skelact: Path, tmp_path: Path) -> None:
    clip = trim_video(require_data("upfall", "Activity9", "Trial1Cam1.mp4"), tmp_path / "clip.mp4", frames=40)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [str(skelact), "recognize", str(clip)], cwd=elsewhere, env=_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # the whole of stdout is the response
    assert result["video"]["frames"] == 40 and result["tracks"] and result["clip"]["label"]
    assert run.stdout.lstrip().startswith("{") and run.stdout.strip().endswith("}")
    # one line names the provider and why; ONNX Runtime's load errors are never printed
    notes = [line for line in run.stderr.splitlines() if "ONNX Runtime runs on" in line]
    assert len(notes) == 1, run.stderr
    assert not [n for n in ORT_NOISE if n in run.stderr + run.stdout], run.stderr
    assert result["provider"] in gpu_providers(), result["provider"]  # the GPU where there is one
    if driver_problem() is not None:  # a CPU host: CPU and the reason for it
        assert result["provider"] == "cpu"
        assert "ONNX Runtime runs on CPU: no NVIDIA driver" in notes[0], notes[0]
        assert "TensorRT and CUDA are not used" in notes[0] and "(available here: cpu)" in notes[0]
    else:
        assert "runs on CPU" not in notes[0], notes[0]
    assert not list(elsewhere.iterdir()), "the command wrote into the working folder"


def test_help_works_from_any_folder(skelact: Path, tmp_path: Path) -> None:
    run = subprocess.run([str(skelact), "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert run.returncode == 0 and "serve" in run.stdout and "recognize" in run.stdout, run.stderr


def test_recognize_says_unknown_and_takes_sets_as_the_api_does(skelact: Path, tmp_path: Path) -> None:
    """The issue's weightlifter (once *two hand front clap*) is ``unknown`` by the model's manifest
    threshold; ``--unknown-threshold=-inf`` turns that off; a bad threshold or set is a one-line error."""
    clip = require_data("clips", "stgcn_clean_and_jerk.mp4")
    env = {**_env(), "SKELACT_ACTION_SETS_DIR": str(tmp_path / "sets")}

    def recognize(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(skelact), "recognize", str(clip), *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )

    default = recognize("--model", "utd-mhad-stgcnpp-lite")
    assert default.returncode == 0, default.stderr[-3000:]
    result = json.loads(default.stdout)
    assert result["clip"]["label"] == "unknown", result["clip"]
    never = recognize("--model", "utd-mhad-stgcnpp-lite", "--unknown-threshold=-inf")
    assert never.returncode == 0, never.stderr[-3000:]
    clip_result = json.loads(never.stdout)["clip"]
    assert clip_result["label"] != "unknown" and "unknown" not in {s["label"] for s in clip_result["top"]}
    bad = recognize("--model", "upfall-stgcnpp-lite", "--unknown-threshold", "1.5")  # max softmax: 0..1
    assert bad.returncode == 2 and "out of range" in bad.stderr and not bad.stdout, bad.stderr[-2000:]
    missing = recognize("--model", "set:nope")
    assert missing.returncode == 2 and "action set 'nope' does not exist" in missing.stderr, missing.stderr[
        -2000:
    ]
