"""A new user's first minutes with the real service (``python -m service serve`` in a subprocess,
default settings, a copy of the shipped models): what the start-up says about providers, the health
bodies, and the API page in Chromium without internet (every request to a host other than the
server is aborted). The 422s a first upload can hit and the counting of refused requests are in the
bad-input corpus (tests/service/test_reliability_inputs.py), with every other bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.providers import driver_problem
from skeleton.manifest import load_manifest
from tests.browser_helpers import CHROMIUM, REPO_ROOT, chromium_args, free_port, run_server
from tests.conftest import gpu_providers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = REPO_ROOT / "artifacts" / "first_run"
ORT_NOISE = ("EP Error", "libcublas", "Failed to create CUDAExecutionProvider")


class Server:
    def __init__(self, url: str, log: Path, zoo: Path) -> None:
        self.url, self.log, self.zoo = url, log, zoo

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=300, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    zoo = tmp_path_factory.mktemp("zoo")
    for manifest in sorted((REPO_ROOT / "model_zoo").glob("*/manifest.json")):
        dst = zoo / manifest.parent.name
        dst.mkdir()
        shutil.copy2(manifest, dst / manifest.name)
        shutil.copy2(manifest.parent / load_manifest(manifest.parent).onnx.file, dst)
    assert any(zoo.iterdir()), "no shipped models"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "server.log"
    log.unlink(missing_ok=True)
    port = free_port()
    with run_server(port, log, env={"SKELACT_MODELS_DIR": str(zoo)}, ready_timeout=300):
        yield Server(f"http://127.0.0.1:{port}", log, zoo)


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "hint"} <= set(body["error"]), body
    return dict(body["error"])


def test_start_up_says_once_which_provider_and_why(server: Server) -> None:
    ready = server.get("/health/ready").json()
    log = server.log.read_text(errors="replace")
    notes = [line for line in log.splitlines() if "ONNX Runtime runs on" in line]
    assert len(notes) == 1, log[-3000:]
    assert ready["provider_note"] and ready["provider_note"] in notes[0]
    assert not [n for n in ORT_NOISE if n in log], log[-3000:]
    assert set(ready["models"].values()) <= set(ready["providers"]), ready
    assert set(ready["models"].values()) <= gpu_providers(), ready  # the GPU where there is one
    if driver_problem() is None:  # a GPU host: nothing says CPU
        assert not [w for w in ready["warnings"] if "runs on CPU" in w], ready["warnings"]
    else:  # a CPU host: only CPU is listed, in one warning for all models
        assert ready["providers"] == ["cpu"], ready
        assert "no NVIDIA driver" in ready["provider_note"], ready
        said = [w for w in ready["warnings"] if "ONNX Runtime runs on" in w]
        assert len(said) == 1 and "(available here: cpu)" in said[0], ready["warnings"]
        # TensorRT cannot run here: no engine cache folder is made beside the models
        assert not list(server.zoo.glob("*/trt_cache")), sorted(server.zoo.rglob("*"))


def test_live_names_the_models_and_pose_while_ready(server: Server) -> None:
    live, ready = server.get("/health/live"), server.get("/health/ready").json()
    assert live.status_code == 200
    body = live.json()
    assert body["ready"] is True and body["status"] == "ok"
    assert body["models"] == ready["models"] and set(body["models"]) == {p.name for p in server.zoo.iterdir()}
    assert body["pose"] == ready["pose"] and body["pose"].startswith("mediapipe")


def test_api_page_works_offline_in_chromium(server: Server) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    blocked: list[str] = []

    def offline(route: Any) -> None:
        url = route.request.url
        if url.startswith(server.url):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(None, False))
        try:
            page = browser.new_page()
            page.route("**/*", offline)
            page.goto(server.url + "/docs")
            page.wait_for_selector(".opblock", timeout=60_000)
            paths = page.locator(".opblock-summary-path").all_text_contents()
            assert "/recognize" in paths and "/health/ready" in paths, paths
            page.screenshot(path=str(ARTIFACTS / "docs.png"))
        finally:
            browser.close()
    assert not blocked, f"the API page asked other hosts for: {json.dumps(blocked)}"
    assert server.get("/redoc").status_code == 404  # not offered: its bundle loads a logo from a CDN
