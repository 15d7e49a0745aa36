"""The README's reproduce commands as a new user runs them (real subprocesses): they never
overwrite the shipped models unless told to (``--force``), and without the real data they stop
with one line that names ``SKELACT_DATA_DIR`` instead of a traceback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skeleton.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

ZOO_MODEL = REPO_ROOT / "model_zoo" / "utd-mhad-stgcnpp-lite"
UTD_CONFIG = "configs/utd-mhad-stgcnpp-lite.yaml"


def _run(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if data_dir is not None:
        env["SKELACT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def _digests(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    return lines[0]


def test_the_shipped_zoo_is_written_only_with_force(tmp_path: Path) -> None:
    before = _digests(ZOO_MODEL)
    export = _run("export", "onnx", "--checkpoint", str(ZOO_MODEL / "checkpoint.pt"), "--out", str(ZOO_MODEL))
    assert "--force" in _one_line_error(export) and "model_zoo" in export.stderr
    train = _run("training.train", "--config", UTD_CONFIG, "--out", str(ZOO_MODEL), "--epochs", "1")
    assert "--force" in _one_line_error(train)
    assert _digests(ZOO_MODEL) == before, "a shipped model's files changed"
    # the defaults write into runs/: training into runs/<config name>, export into runs/model_zoo/<name>
    help_text = _run("export", "onnx", "--help").stdout + _run("training.train", "--help").stdout
    assert "runs/model_zoo/<name>" in help_text and "runs/<config name>" in help_text


@pytest.mark.parametrize(
    "command",
    [
        ("training.train", "--config", UTD_CONFIG, "--epochs", "1", "--out", "{tmp}/run"),
        ("export", "onnx", "--checkpoint", str(ZOO_MODEL / "checkpoint.pt"), "--out", "{tmp}/model"),
        ("training.extract", "--videos", "{data}/upfall", "--out", "{tmp}/cache"),
    ],
    ids=["train", "export", "extract"],
)
def test_without_data_one_line_names_the_setting(command: tuple[str, ...], tmp_path: Path) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    args = [a.format(tmp=tmp_path, data=empty) for a in command]
    line = _one_line_error(_run(*args, data_dir=empty))
    assert "SKELACT_DATA_DIR" in line and str(empty) in line, line
    assert not (tmp_path / "model").exists() and not (tmp_path / "cache").exists()
