"""Smoke test of the benchmark harness (``python -m bench``) with tiny settings, end to end.

Real everything, only small: a real ST-GCN++ lite model (the UP-Fall config's architecture, seeded
random weights, saved as a training checkpoint and exported with the project's exporter), one
second of a real UP-Fall clip, batch size 1, one thread, one WebSocket client at 15 fps for one
second, a real ``python -m service serve`` on loopback. Checks that every section produced
numbers, that PyTorch was rebuilt from the checkpoint and matches ONNX Runtime, and that the
report, targets and plots were written. Timing values are not asserted (shared CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, require_data

pytestmark = pytest.mark.slow

CONFIG = REPO_ROOT / "configs" / "upfall-stgcnpp-lite.yaml"


def make_model_dir(folder: Path, name: str = "bench-smoke", seed: int = 0) -> Path:
    """checkpoint.pt (training's format) + model.onnx + manifest.json for a seeded random model."""
    import torch

    from export.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
    from models import build_model
    from skeleton.layouts import get_layout
    from skeleton.manifest import MANIFEST_FILE, ModelManifest, OnnxSpec, sha256_file
    from training.config import load_config

    cfg = load_config(CONFIG, {"name": name})
    labels = [f"action_{i}" for i in range(11)]
    torch.manual_seed(seed)
    model = build_model(cfg.model.arch, len(labels), cfg.input.layout, **cfg.model.kwargs).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": model.state_dict(), "config": cfg.model_dump(mode="json"), "labels": labels,
         "label_groups": {}, "metrics": {}},
        folder / "checkpoint.pt",
    )
    dims = (cfg.input.channels, cfg.input.window.length, get_layout(cfg.input.layout).num_joints)
    export_onnx(model, torch.zeros((2, *dims)), folder / "model.onnx")
    manifest = ModelManifest(
        name=name, version="0", architecture=cfg.model.arch, labels=labels, input=cfg.input,
        onnx=OnnxSpec(sha256=sha256_file(folder / "model.onnx"), opset=OPSET, input_name=INPUT_NAME,
                      input_shape=["batch", *dims], output_name=OUTPUT_NAME,
                      output_shape=["batch", len(labels)]),
    )
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
    return folder


def test_bench_harness_end_to_end(tmp_path: Path) -> None:
    from bench.__main__ import main
    from bench.clips import PIPELINE_CLIP, STREAM_CLIP
    from bench.report import DOCS_END, DOCS_START, evaluate, update_docs
    from service.core.config import Settings
    from service.streams.pacing import SOLO_PROBE_EVERY

    require_data(PIPELINE_CLIP)
    require_data(STREAM_CLIP)
    zoo = tmp_path / "zoo"
    make_model_dir(zoo / "bench-smoke")
    out = tmp_path / "results"
    rc = main([
        "all", "--out", str(out), "--no-docs", "--models-dir", str(zoo), "--no-gpu",
        "--batch-sizes", "1,16", "--threads", "1", "--min-time", "0.05",
        "--clip-seconds", "1", "--repeats", "1",
        "--clients", "1", "--fps", "15", "--stream-seconds", "1", "--drain", "5",
    ])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["logical_cores"] and results["machine"]["versions"]["mediapipe"]
    assert 0 <= results["cpu_steal_percent"] <= 100  # other VMs' share of our cores (Linux /proc/stat)
    sections = results["sections"]

    clf = sections["classifier"]["models"]
    assert [m["model"] for m in clf] == ["bench-smoke"]
    m = clf[0]
    assert m["torch_weights"] == "checkpoint" and m["torch_source"].endswith("checkpoint.pt")
    assert m["parity_max_abs"] is not None and m["parity_max_abs"] < 1e-4
    assert m["distinct_windows"] >= 1  # real windows from the poses of the actor
    runtimes = {(r["runtime"], r["device"], r["threads"], r["batch"]) for r in m["rows"]}
    assert runtimes == {(rt, "cpu", 1, b) for rt in ("onnxruntime", "pytorch") for b in (1, 16)}
    assert all(r["median_ms"] > 0 and r["calls"] >= 3 for r in m["rows"])

    pipe = sections["pipeline"]
    assert pipe["bare"]["frames"] == pipe["service"]["frames"] > 10  # 1 s of an 18 fps clip
    assert pipe["bare"]["pose_ms"] > 0 and pipe["service"]["stage_ms_per_frame"]["pose"] > 0
    assert pipe["service"]["model"] == "bench-smoke" and pipe["service"]["server_cpu_percent"] > 0
    assert np.isfinite(pipe["overhead"])
    lanes = pipe["lanes"]  # the second server, two estimators per clip
    assert lanes["lanes"] == 2 and lanes["service"]["frames"] == pipe["service"]["frames"]
    assert lanes["server_lanes"] == min(2, Settings().pose_workers) and lanes["speedup"] > 0

    bare = sections["stream"]["bare"]  # the single client's frames through decode + pose alone
    assert bare["frames"] == 15 and bare["pose_ms"] > 0 and bare["p95_ms"] >= bare["p50_ms"] > 0
    (scen,) = sections["stream"]["scenarios"]
    assert scen["clients"] == 1 and scen["fps"] == 15 and scen["sent"] == 15
    assert scen["replies"] >= 1 and scen["replies"] + scen["dropped"] + scen["unanswered"] == scen["sent"]
    assert scen["unanswered"] == 0  # the last frame is always answered within the drain time
    assert scen["latency_ms"]["p95"] > 0 and scen["server_latency_ms"]["p50"] > 0
    assert scen["server"]["server_rss_peak_mib"] > 50 and scen["server"]["stage_ms_mean"]["pose"] > 0
    solo = sections["stream"]["bare_solo"]  # the bare loop on the estimator of a stream alone
    if Settings().solo_threads > 1:  # two or more cores: the solo client posed on all of them
        assert solo["threads"] == Settings().solo_threads and solo["frames"] == 15
        # ... but a stream starts single-threaded: solo is first tried after SOLO_PROBE_EVERY frames
        assert SOLO_PROBE_EVERY > 15 and scen["server"]["solo_frames"] == 0
    else:
        assert solo is None and scen["server"]["solo_frames"] == 0

    report = (out / "report.md").read_text()
    targets = evaluate(sections)
    assert any("ONNX Runtime vs PyTorch" in t.name and t.passed is not None for t in targets)
    assert any("overhead" in t.name and t.passed is not None for t in targets)
    assert any("single-stream p95" in t.name and t.passed is not None for t in targets)
    assert "### Targets" in report and ("PASS" in report or "FAIL" in report)
    for png in ("classifier.png", "pipeline.png", "streaming.png"):
        assert (out / png).stat().st_size > 10_000

    # `python -m bench report` re-renders from results.json; the docs section is replaced in place.
    assert main(["report", "--out", str(out), "--no-docs", "--no-plots"]) == 0
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Head\n\n{DOCS_START}\nPREVIOUS-RESULTS\n{DOCS_END}\n\nTail\n")
    assert update_docs(doc, report)
    text = doc.read_text()
    assert text.startswith("# Head") and text.rstrip().endswith("Tail") and "PREVIOUS-RESULTS" not in text
    assert "### Targets" in text


def test_onnx_ab_compares_a_zoo_model_with_its_fresh_export(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench.onnx_ab <model dir>`: the shipped graph against today's export of its checkpoint."""
    from bench.onnx_ab import main

    assert main([str(REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite"), "--rounds", "2", "--round-s", "0.05",
                 "--batch", "2"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("largest output difference ")[1].split()[0])
    assert diff < 1e-3  # the zoo's model.onnx is the current export of its checkpoint
    assert "B/A" in out and out.count("rounds (ms):") == 2


def test_idle_memory_reads_the_idle_server_between_stream_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m bench.idle_memory`: the real server on the shipped models, real frames, a reading
    of its idle memory before the cycles and after every ``--every`` of them."""
    from bench.clips import STREAM_CLIP
    from bench.idle_memory import main

    require_data(STREAM_CLIP)
    assert main(["--cycles", "4", "--every", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    readings = [line.split() for line in lines if line.startswith("cycles")]
    assert [int(r[1]) for r in readings] == [0, 2, 4]
    assert all(100 < float(r[4]) < 8000 for r in readings), readings  # MB: a server with its models
    assert lines[-1].startswith("after the first 2 cycles: ")


def test_bench_stops_at_once_when_results_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unwritable results folder (a Docker mount owned by someone else) fails at the start,
    saying how to fix it; SKELACT_BENCH_OUT is the default --out (the bench image sets it)."""
    from bench.__main__ import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SKELACT_BENCH_OUT", str(blocker / "results"))
    with pytest.raises(SystemExit) as exc:
        main(["classifier", "--quick", "--no-plots"])
    assert isinstance(exc.value.__cause__, OSError)
    message = str(exc.value)
    assert str(blocker / "results") in message and "SKELACT_BENCH_USER=$(id -u):$(id -g)" in message


def test_capacity_finds_the_streams_a_pod_takes(tmp_path: Path) -> None:
    """``python -m bench capacity`` (small): a server pinned to one core like a one-core pod, the
    stream ramp and the concurrent clips, written to results.json and the report. Whether a step
    meets the target decides the ramp: with a target every step meets it, the ramp runs to
    --max-clients; with one no step can meet, it stops after the first and reports 0."""
    import psutil

    from bench.__main__ import main
    from bench.capacity import pod_cpus, stream_capacity
    from bench.clips import PIPELINE_CLIP, STREAM_CLIP, jpeg_frames
    from bench.server import launch_server
    from tests.service_helpers import write_linear_model

    require_data(PIPELINE_CLIP)
    stream_clip = require_data(STREAM_CLIP)
    zoo = tmp_path / "zoo"
    write_linear_model(zoo / "linear", ["a", "b"], length=16, fps=10, stride=4)
    out = tmp_path / "results"
    common = ["--out", str(out), "--no-docs", "--no-plots", "--models-dir", str(zoo), "--cores", "1"]
    small = ["--capacity-fps", "5", "--step-seconds", "2", "--max-clients", "2", "--clip-seconds", "1"]
    lax = ["--latency-p95-ms", "600000", "--max-drop", "1"]
    assert main(["capacity", *common, *small, *lax]) == 0
    sec = json.loads((out / "results.json").read_text())["sections"]["capacity"]
    assert sec["cores"] == 1 and len(sec["cpus"]) == 1
    assert [s["clients"] for s in sec["steps"]] == [1, 2] and all(s["meets_target"] for s in sec["steps"])
    assert sec["streams"] == 2 and sec["streams_per_core"] == 2
    assert all(s["replies"] > 0 and s["latency_ms"]["p95"] > 0 for s in sec["steps"])
    clips = sec["clips"]
    assert clips["concurrent"] == 1 and clips["frames"][0] >= 15 and clips["video_s_per_s_per_core"] > 0
    assert "### Capacity of one pod" in (out / "report.md").read_text()

    frames = jpeg_frames(stream_clip, 30)
    cpus = pod_cpus(1)
    with launch_server({"SKELACT_MODELS_DIR": str(zoo), "SKELACT_POSE_WORKERS": "1"}, cpus=cpus) as server:
        assert set(server.process.cpu_affinity()) == cpus  # the whole server, threads included
        assert all(set(psutil.Process(t.id).cpu_affinity()) == cpus for t in server.process.threads())
        strict = stream_capacity(server, frames, 5.0, 2.0, target_p95_ms=0.001, max_drop=0.0, max_clients=3)
    assert strict["streams"] == 0 and len(strict["steps"]) == 1 and not strict["steps"][0]["meets_target"]
