"""Teaching a new action in the browser page (service/static/teach.js), in real headless Chromium
against the real server: the fake camera plays a person jumping (UP-Fall), the page records 3 s of it
as an example of a new label, lists the example, and the live stream then recognises the label.
Screenshots go to artifacts/browser/."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from skeleton.manifest import load_manifest
from tests.browser_helpers import CHROMIUM, REPO_ROOT, chromium_args, free_port, run_server, write_y4m
from tests.conftest import require_data
from tests.service.api.test_browser import _require_browser
from tests.service_helpers import embedding_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
TIMEOUT_MS = 180_000  # pose + an embedding window on 2 shared CPU cores


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("teach")
    zoo = tmp / "zoo"
    for src, dst in (
        (REPO_ROOT / "model_zoo" / "upfall-stgcnpp-lite", zoo),
        (embedding_dir(), zoo / "embeddings"),
    ):
        (dst / src.name).mkdir(parents=True)
        shutil.copy2(src / "manifest.json", dst / src.name)
        shutil.copy2(src / load_manifest(src, verify_sha=False).onnx.file, dst / src.name)
    env = {
        "SKELACT_MODELS_DIR": str(zoo),
        "SKELACT_ACTION_SETS_DIR": str(tmp / "sets"),
        "SKELACT_PROVIDERS": "cpu",
    }
    port = free_port()
    with run_server(port, tmp / "server.log", env=env, ready_timeout=300):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    sync_api = _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    camera = ARTIFACTS / "fake_camera_jumping.y4m"
    n = write_y4m(
        require_data("upfall", "Activity10", "Trial1Cam1.mp4"), camera, size=(480, 360), seconds=8.0
    )
    assert n >= 100
    assert CHROMIUM.exists()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(camera))
        yield b
        b.close()


def test_record_an_example_from_the_camera_and_see_it_recognised(browser: Any, server: str) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    labels: list[str] = []
    sent: list[dict[str, Any]] = []
    hellos: list[dict[str, Any]] = []

    def on_ws(ws: Any) -> None:
        def received(payload: str | bytes) -> None:
            msg = json.loads(payload)
            if msg.get("type") == "frame":
                labels.extend(t["label"] for t in msg["tracks"] if t["label"])
            elif msg.get("type") == "hello":
                hellos.append(msg)

        def out(payload: str | bytes) -> None:
            if isinstance(payload, str):
                sent.append(json.loads(payload))

        ws.on("framereceived", received)
        ws.on("framesent", out)

    page.on("websocket", on_ws)
    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#model').options[0]?.value !== ''", timeout=30_000)
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert "upfall-stgcnpp-lite" in options and not [o for o in options if "embedding" in o], options
    page.click("#start")
    page.wait_for_selector("#status[data-level='ok']", timeout=60_000)
    page.fill("#teach-set", "browser-set")
    page.fill("#teach-label", "jump")
    page.click("#teach-record")
    try:
        page.wait_for_selector("#teach-examples li[data-label='jump']", timeout=TIMEOUT_MS)
    except Exception as exc:
        page.screenshot(path=str(ARTIFACTS / "teach-failed.png"))
        raise AssertionError(f"status {page.text_content('#status')!r}, sent {sent[-5:]}, {errors}") from exc
    assert "1 example" in page.text_content("#teach-examples li[data-label='jump']")
    assert {"type": "enrol", "action_set": "browser-set", "label": "jump", "seconds": 3} in sent, sent
    assert page.eval_on_selector("#model", "s => s.value") == "set:browser-set"
    page.wait_for_selector("#people .action:text-is('jump')", timeout=TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "teach.png"))
    assert "jump" in labels and not errors, (labels[-10:], errors)
    # a second label recorded from the same jumping: the check warns each may be taken for the other
    page.fill("#teach-label", "hop")
    page.click("#teach-record")
    page.wait_for_selector("#teach-examples li[data-label='hop']", timeout=TIMEOUT_MS)
    for label, other in (("hop", "jump"), ("jump", "hop")):
        note = page.text_content(
            f"#teach-examples li[data-label='{label}'] .check-warning[data-outcome='overlaps']"
        )
        assert note is not None and f"may be taken for “{other}”" in note, (label, note)
    page.screenshot(path=str(ARTIFACTS / "teach-check.png"))
    # deleting the examples empties the list again
    page.click("#teach-examples li[data-label='hop'] button")
    page.wait_for_selector("#teach-examples li[data-label='hop']", state="detached", timeout=60_000)
    assert not page.query_selector("#teach-examples .check-warning")  # jump alone: nothing to warn about
    # next to the server's model: the stream switches to set:NAME,MODEL, whose labels are the UP-Fall
    # model's and the taught one, and the jumping is still the taught "jump"
    both = "set:browser-set,upfall-stgcnpp-lite"
    page.check("#teach-base")
    page.wait_for_function(f"document.querySelector('#model').value === '{both}'", timeout=60_000)
    deadline = time.monotonic() + 60
    while not any(h["model"] == both for h in hellos):
        assert time.monotonic() < deadline, [h["model"] for h in hellos]
        page.wait_for_timeout(200)
    hello = next(h for h in hellos if h["model"] == both)
    assert "jump" in hello["labels"] and "falling backwards" in hello["labels"], hello["labels"]
    labels.clear()  # from here on, the stream on both models
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while "jump" not in labels:
        assert time.monotonic() < deadline and not errors, (labels[-10:], errors)
        page.wait_for_timeout(200)
    page.uncheck("#teach-base")
    page.wait_for_function("document.querySelector('#model').value === 'set:browser-set'", timeout=60_000)
    page.click("#teach-examples li[data-label='jump'] button")
    page.wait_for_selector("#teach-examples li:has-text('No examples yet')", timeout=60_000)
