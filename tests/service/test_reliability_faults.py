"""Faults at start-up: broken model folders fail it with a clear message; no GPU falls back to CPU
with a warning in /health/ready.

Each broken folder is a real exported (tiny) model damaged the way it happens in practice: the ONNX
file missing, truncated (with a matching sha, so ONNX Runtime has to notice), swapped for another
model (sha mismatch), or a manifest copied from a model with another window or label set.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.metrics import Metrics
from service.registry import ModelRegistry
from skeleton.manifest import sha256_file
from tests.conftest import gpu_available, gpu_providers
from tests.service_helpers import write_linear_model

pytestmark = pytest.mark.timeout(60)

LABELS = ["stand", "walk", "fall", "sit"]
# folder -> what the reason must say
BROKEN = {
    "missing-onnx": "model.onnx, which is missing",
    "corrupt-onnx": "not a readable ONNX model",
    "sha-mismatch": "does not match the sha256",
    "window-mismatch": "window length 16",
    "labels-mismatch": "lists 5 labels",
}


def _manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return data


def _write(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    write_linear_model(root / "good", LABELS, length=8, fps=10, stride=2)
    for name in BROKEN:
        write_linear_model(root / name, LABELS, length=8, fps=10, stride=2)
    (root / "missing-onnx" / "model.onnx").unlink()
    corrupt = root / "corrupt-onnx" / "model.onnx"
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # a copy cut short...
    m = _manifest(corrupt.parent)
    m["onnx"]["sha256"] = sha256_file(corrupt)  # ...by a tool that re-hashed it
    _write(corrupt.parent, m)
    write_linear_model(root / "other", LABELS, length=8, fps=10, stride=2, seed=9)
    shutil.copy(root / "other" / "model.onnx", root / "sha-mismatch" / "model.onnx")
    shutil.rmtree(root / "other")
    m = _manifest(root / "window-mismatch")
    m["input"]["window"]["length"] = 16
    m["onnx"]["input_shape"] = ["batch", 3, 16, 33]
    _write(root / "window-mismatch", m)
    m = _manifest(root / "labels-mismatch")
    m["labels"] = [*LABELS, "jump"]
    _write(root / "labels-mismatch", m)
    return root


def test_registry_names_each_fault_clearly(zoo: Path) -> None:
    # no warm-up: the graph check alone must catch a manifest that does not match the model
    registry = ModelRegistry(Settings(models_dir=zoo, providers=["cpu"], warmup=False), Metrics())
    registry.load_all()
    assert set(registry.models) == {"good"}
    assert set(registry.failed) == set(BROKEN)
    for name, phrase in BROKEN.items():
        reason = registry.failed[name]
        assert phrase in reason, (name, reason)
        assert "Traceback" not in reason and len(reason) < 600, reason
    assert (
        "re-export" in registry.failed["window-mismatch"]
        and "(N, 3, 16, 33)" in registry.failed["window-mismatch"]
    )
    assert "re-export or re-copy" in registry.failed["corrupt-onnx"]


def _settled(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while client.app.state.service.starting:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body: dict[str, Any] = client.get("/health/ready").json()
    return body


@pytest.mark.parametrize("case", ["broken models (strict)", "no models"])
def test_failed_start_up_is_503_with_the_reasons(zoo: Path, case: str) -> None:
    """Start-up that fails: /health/ready and POST /recognize answer 503 with why, once start-up is
    over (waited for, not timed); the process itself is live."""
    broken = case.startswith("broken")
    models_dir, says = (zoo, "failed to load") if broken else (zoo / "missing", "no models")
    with TestClient(create_app(Settings(models_dir=models_dir, providers=["cpu"]))) as c:
        ready = _settled(c)
        assert c.get("/health/ready").status_code == 503
        assert ready["status"] == "error" and not ready["ready"]
        if broken:
            for name, phrase in BROKEN.items():
                assert name in ready["reason"] and phrase in ready["reason"], name
            assert "SKELACT_STRICT_MODELS=false" in ready["reason"]
        else:
            assert "no models" in ready["reason"], ready
        assert c.get("/health/live").status_code == 200  # the process is up and says why
        r = c.post("/recognize", json={"frames": [{"timestamp": 0}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert says in r.json()["error"]["message"], r.json()


def test_lenient_start_up_serves_the_good_model_and_warns(zoo: Path) -> None:
    # providers as in production (GPU first): on a machine without a GPU the model runs on CPU
    settings = Settings(models_dir=zoo, strict_models=False)
    assert settings.providers == ["tensorrt", "cuda", "cpu"]
    with TestClient(create_app(settings)) as c:
        ready = _settled(c)
        assert c.get("/health/ready").status_code == 200 and ready["models"].keys() == {"good"}
        warnings = "\n".join(ready["warnings"])
        for name, phrase in BROKEN.items():
            assert f"model {name} not loaded" in warnings and phrase in warnings, name
        assert ready["models"]["good"] in gpu_providers(), ready  # the GPU where there is one
        on_cpu = "runs on CPU" in warnings and "SKELACT_PROVIDERS=cpu" in warnings
        assert on_cpu == (not gpu_available()), warnings
        models = c.get("/models").json()
        assert [m["name"] for m in models["models"]] == ["good"]
        body = {"frames": [{"timestamp": 0.0, "people": []}]}
        assert c.post("/recognize?model=corrupt-onnx", json=body).json()["error"]["code"] == "model_failed"
        assert c.post("/recognize?model=good", json=body).status_code == 200
