"""``python -m bench.torch_gpu``: the poses made here, the classifier rows from them (a smoke run on
the CPU; on a GPU machine the same command adds the CUDA rows and the CUDA-graph comparison)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.torch_gpu import main
from tests.conftest import REPO_ROOT, require_data

pytestmark = pytest.mark.slow


def test_frames_made_here_give_the_classifier_rows(tmp_path: Path) -> None:
    require_data("upfall")
    frames = tmp_path / "frames.pkl"
    assert main(["frames", "--out", str(frames)]) == 0 and frames.stat().st_size > 0
    out = tmp_path / "out"
    assert main(["run", str(frames), "--out", str(out), "--quick"]) == 0
    result = json.loads((out / "classifier.json").read_text())
    folders = {m["folder"] for m in result["models"]}
    assert folders == {p.name for p in (REPO_ROOT / "model_zoo").iterdir() if (p / "checkpoint.pt").is_file()}
    for m in result["models"]:
        assert m["distinct_windows"] > 0 and m["torch_weights"] == "checkpoint", m
        assert {(r["runtime"], r["batch"]) for r in m["rows"]} >= {("onnxruntime", 1), ("pytorch", 1)}
    assert not (out / "graphs.json").exists()  # no GPU here
