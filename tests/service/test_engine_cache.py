"""TensorRT engine cache (service.engine_cache), checked without a GPU: the folder key on the shipped
models through the service and the export command line, and the one-builder / complete-or-absent
protocol with real processes and a stand-in for ONNX Runtime's engine build."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service import engine_cache, providers
from service.classifier import OnnxClassifier
from service.engine_cache import RECORD, complete_files, load_or_build, lock_path
from skeleton.manifest import load_manifest, sha256_file
from tests.conftest import REPO_ROOT, gpu_available

ZOO = REPO_ROOT / "model_zoo"
SHIPPED = sorted(p.parent for p in ZOO.glob("*/manifest.json"))
# Named as ORT names an engine; the payload stands for a serialized engine.
ENGINE = "TensorrtExecutionProvider_TRTKernel_graph_main_graph_1234_0_0_fp16_sm90.engine"
PAYLOAD = bytes(range(256)) * 256  # 64 KiB, written in 64 chunks


def _copy_model(src: Path, dst: Path) -> Path:
    """Manifest + ONNX file only: the model as the service loads it."""
    dst.mkdir(parents=True)
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    shutil.copy2(src / load_manifest(src).onnx.file, dst / load_manifest(src).onnx.file)
    return dst


def stand_in_session(folder: Path, builds: Path, chunk_s: float) -> str:
    """What ORT's TensorRT provider does with its engine cache: load the engine when the file is
    there (TensorRT rejects an incomplete one), else build it and write it in place, chunk by chunk."""
    engine = folder / ENGINE
    if engine.exists():
        if engine.read_bytes() != PAYLOAD:
            raise RuntimeError(f"could not deserialize engine {engine}")
        return "loaded"
    with open(builds, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(engine, "wb") as f:
        for i in range(0, len(PAYLOAD), 1024):
            f.write(PAYLOAD[i : i + 1024])
            f.flush()
            time.sleep(chunk_s)
    return "built"


def _worker(folder: str, builds: str, chunk_s: float, ready: str, go: str) -> None:
    """One process asking for the engine: signals ready, waits for go, prints what it got."""
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    result = load_or_build(Path(folder), lambda: stand_in_session(Path(folder), Path(builds), chunk_s),
                           lambda _: True)
    print(result, flush=True)


def _spawn(folder: Path, builds: Path, chunk_s: float, ready: Path, go: Path) -> subprocess.Popen[str]:
    code = (f"from tests.service.test_engine_cache import _worker; "
            f"_worker({str(folder)!r}, {str(builds)!r}, {chunk_s}, {str(ready)!r}, {str(go)!r})")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def _wait_for(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _build_count(builds: Path) -> int:
    return len(builds.read_text().split()) if builds.exists() else 0


# --------------------------------------------------------------------------- where engines go


def test_same_tensor_names_other_weights_never_share_an_engine_folder(tmp_path: Path) -> None:
    """ORT's own cache key (file name, graph, tensor names, versions) ignores the weights: a model
    retrained with the same recipe (a fold model, a new seed) has the same key as the shipped one.
    Under one SKELACT_TRT_CACHE_DIR each must still get its own folder, or one would run the
    other's engine."""
    import onnx
    from onnx import numpy_helper

    def names(d: Path) -> tuple[object, ...]:
        m = load_manifest(d)
        g = onnx.load(str(d / m.onnx.file)).graph
        return (m.onnx.file, g.name, [i.name for i in g.input], sorted(i.name for i in g.initializer),
                [o for n in g.node for o in n.output])

    shipped = ZOO / "utd-mhad-stgcnpp-lite"
    same, retrained = _copy_model(shipped, tmp_path / "a"), _copy_model(shipped, tmp_path / "b")
    onnx_file = retrained / load_manifest(retrained).onnx.file
    model = onnx.load(str(onnx_file))
    w = next(i for i in model.graph.initializer if numpy_helper.to_array(i).size > 1)
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))
    onnx.save(model, str(onnx_file))
    manifest_file = retrained / "manifest.json"
    doc = json.loads(manifest_file.read_text())
    doc["onnx"]["sha256"] = sha256_file(onnx_file)  # a consistent export, only other weights
    manifest_file.write_text(json.dumps(doc))
    assert names(same) == names(retrained)  # the case ORT alone cannot tell apart

    shared = tmp_path / "shared"
    requested = ["tensorrt", "cuda", "cpu"]
    folders = [OnnxClassifier(d, load_manifest(d), requested, trt_cache_dir=shared).engine_dir
               for d in (same, retrained)]
    assert folders[0] is not None and folders[1] is not None and folders[0] != folders[1]
    assert folders[0].is_relative_to(shared) and folders[1].is_relative_to(shared)


def test_export_writes_where_the_service_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same environment: the service's registry and `python -m export tensorrt` name the same folder
    per model; no folder is made on this GPU-less host (issue 21: no empty trt_cache folders)."""
    from service.core.config import Settings
    from service.metrics import Metrics
    from service.registry import ModelRegistry

    zoo = tmp_path / "zoo"
    for d in SHIPPED:
        _copy_model(d, zoo / d.name)
    cache = tmp_path / "engines"
    for env in ({}, {"SKELACT_TRT_CACHE_DIR": str(cache), "SKELACT_TRT_FP16": "false",
                     "SKELACT_BATCH_MAX_SIZE": "32"}):
        for k in ("SKELACT_TRT_CACHE_DIR", "SKELACT_TRT_FP16", "SKELACT_BATCH_MAX_SIZE"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        registry = ModelRegistry(Settings(models_dir=zoo), Metrics())
        registry.load_all()
        served = {name: str(m.runtime.engine_dir) for name, m in registry.models.items()}
        cmd = [sys.executable, "-m", "export", "tensorrt", "--models-dir", str(zoo), "--dry-run"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert proc.returncode == 0, proc.stderr
        exported = {e["model"]: e["engine_dir"] for e in map(json.loads, proc.stdout.splitlines())}
        assert exported == served and len(served) == 2
        for name, folder in served.items():
            root = cache if env else zoo / name / "trt_cache"
            assert Path(folder).parent == root / name
            assert ("-fp32-b1-8-32-" if env else "-fp16-b1-8-64-") in Path(folder).name
    if not gpu_available():
        assert not cache.exists() and not any(zoo.glob("*/trt_cache"))


def test_precision_profile_and_onnx_bytes_change_the_folder(tmp_path: Path) -> None:
    model = _copy_model(SHIPPED[0], tmp_path / "m")
    manifest = load_manifest(model)

    def folder(fp16: bool = True, max_batch: int = 64) -> Path:
        out = OnnxClassifier(model, manifest, ["tensorrt", "cpu"], trt_fp16=fp16, max_batch_hint=max_batch)
        assert out.engine_dir is not None
        return out.engine_dir

    base = folder()
    assert folder() == base  # same model and settings: the same engine
    assert folder(fp16=False) != base
    assert folder(max_batch=32) != base
    onnx_file = model / manifest.onnx.file  # a re-export: same name and tensor names, other bytes
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 1
    onnx_file.write_bytes(bytes(data))
    assert folder() != base


def test_tensorrt_version_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed TensorRT wheel (found through its package metadata) names the folder."""
    site = tmp_path / "site"
    info = site / "tensorrt_cu13_libs-10.16.1.11.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt_cu13_libs\nVersion: 10.16.1.11\n")
    model = SHIPPED[0]
    engine_cache.tensorrt_version.cache_clear()
    without = OnnxClassifier(model, load_manifest(model), ["tensorrt", "cpu"]).engine_dir
    monkeypatch.syspath_prepend(str(site))
    engine_cache.tensorrt_version.cache_clear()
    try:
        with_trt = OnnxClassifier(model, load_manifest(model), ["tensorrt", "cpu"]).engine_dir
    finally:
        monkeypatch.undo()
        engine_cache.tensorrt_version.cache_clear()
    assert with_trt is not None and "-trt10.16.1.11-" in with_trt.name and with_trt != without


def test_no_cache_folder_where_tensorrt_cannot_run(tmp_path: Path) -> None:
    if gpu_available():
        pytest.skip("a GPU is present: TensorRT may run and make its folder")
    import onnxruntime as ort

    model = _copy_model(SHIPPED[0], tmp_path / "m")
    clf = OnnxClassifier(model, load_manifest(model), ["tensorrt", "cuda", "cpu"])
    assert clf.provider == "cpu" and clf.engine_dir is not None
    assert not (model / "trt_cache").exists()
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    assert providers.gpu_provider_unusable(lib)  # says why (no driver here)


def test_unwritable_cache_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder cannot be made under a file, whoever runs the test
    monkeypatch.setattr(engine_cache, "_unwritable_reported", False)
    with caplog.at_level(logging.WARNING, logger="service.engine_cache"):
        assert engine_cache.writable_dir([blocker / "a", blocker / "b"]) is None
        assert engine_cache.writable_dir([blocker / "a", blocker / "b"]) is None
    said = [r for r in caplog.records if "no writable TensorRT engine cache" in r.getMessage()]
    assert len(said) == 1
    assert engine_cache.writable_dir([blocker / "a", tmp_path / "ok"]) == tmp_path / "ok"


# --------------------------------------------------------------------------- one builder, complete or absent


def test_two_processes_build_one_engine(tmp_path: Path) -> None:
    folder, builds, go = tmp_path / "cache" / "m" / "key", tmp_path / "builds.log", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [_spawn(folder, builds, 0.01, r, go) for r in ready]
    try:
        _wait_for(lambda: all(r.exists() for r in ready), "both processes to start")
        go.touch()  # both ask for the engine at once
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["built", "loaded"]
    assert _build_count(builds) == 1
    assert (folder / ENGINE).read_bytes() == PAYLOAD
    assert set(complete_files(folder)) == {ENGINE}
    assert lock_path(folder).exists() and not lock_path(folder).is_relative_to(folder)


@pytest.mark.parametrize("damage", ["truncated", "same size, one byte changed"])
def test_damaged_engine_is_removed_and_rebuilt(tmp_path: Path, damage: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    folder, builds = tmp_path / "key", tmp_path / "builds.log"

    def session() -> str:
        return stand_in_session(folder, builds, 0.0)

    assert load_or_build(folder, session, lambda _: True) == "built"
    assert load_or_build(folder, session, lambda _: True) == "loaded"  # complete: reused
    engine = folder / ENGINE
    if damage == "truncated":
        engine.write_bytes(PAYLOAD[: len(PAYLOAD) // 3])
    else:
        engine.write_bytes(PAYLOAD[:-1] + b"\x00")
    with caplog.at_level(logging.WARNING, logger="service.engine_cache"):
        assert load_or_build(folder, session, lambda _: True) == "built"
    assert any(ENGINE in r.getMessage() for r in caplog.records)
    assert _build_count(builds) == 2 and engine.read_bytes() == PAYLOAD
    assert set(complete_files(folder)) == {ENGINE}


def test_killed_builder_leaves_nothing_taken_as_complete(tmp_path: Path) -> None:
    folder, builds, go = tmp_path / "key", tmp_path / "builds.log", tmp_path / "go"
    go.touch()
    proc = _spawn(folder, builds, 0.05, tmp_path / "ready", go)  # ~3 s to write the engine
    try:
        _wait_for(lambda: (folder / ENGINE).exists() and (folder / ENGINE).stat().st_size > 0,
                  "the build to start writing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (folder / ENGINE).stat().st_size < len(PAYLOAD)  # half-written, as a killed ORT leaves it
    assert complete_files(folder) == {} and not (folder / RECORD).exists()
    # The kernel released the dead builder's lock: the next process removes the partial file and builds.
    assert load_or_build(folder, lambda: stand_in_session(folder, builds, 0.0), lambda _: True) == "built"
    assert _build_count(builds) == 2 and (folder / ENGINE).read_bytes() == PAYLOAD


def test_failed_or_fallen_back_session_records_nothing(tmp_path: Path) -> None:
    """ORT fell back to another provider (warm-up says the engine did not run), or the build raised:
    whatever it wrote is removed, nothing is recorded."""
    folder, builds = tmp_path / "key", tmp_path / "builds.log"
    assert load_or_build(folder, lambda: stand_in_session(folder, builds, 0.0), lambda _: False) == "built"
    assert not (folder / ENGINE).exists() and complete_files(folder) == {}

    def broken() -> str:
        stand_in_session(folder, builds, 0.0)
        raise RuntimeError("TensorRT build failed")

    with pytest.raises(RuntimeError):
        load_or_build(folder, broken, lambda _: True)
    assert list(folder.iterdir()) == []


@pytest.mark.gpu
def test_replicas_build_a_real_engine_once(tmp_path: Path) -> None:
    """On a GPU: two service processes start at once on one cache root; TensorRT builds once, both
    run on it, and a third process loads it without recording anything new."""
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO); from pathlib import Path; "
            "from service.classifier import OnnxClassifier; from skeleton.manifest import load_manifest; "
            "d = Path(sys.argv[1]); c = OnnxClassifier(d, load_manifest(d), ['tensorrt', 'cuda', 'cpu'], "
            "trt_cache_dir=Path(sys.argv[2])); print(c.provider, c.engine_dir)")
    cache = tmp_path / "engines"

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code, str(SHIPPED[0]), str(cache)], cwd=REPO_ROOT,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})

    outs = [p.communicate(timeout=600) for p in [start(), start()]]
    assert all(out.split()[0] == "tensorrt" for out, _ in outs), outs
    assert sum("waiting for" in err for _, err in outs) == 1  # the other one built meanwhile
    assert not any("removed" in err for _, err in outs)
    folder = Path(outs[0][0].split()[1])
    engines = {n: (folder / n).stat().st_mtime_ns for n in complete_files(folder) if n.endswith(".engine")}
    assert engines
    out, err = start().communicate(timeout=600)  # a restart loads the engine, builds nothing
    assert out.split()[0] == "tensorrt" and "removed" not in err
    assert {n: (folder / n).stat().st_mtime_ns for n in engines} == engines
