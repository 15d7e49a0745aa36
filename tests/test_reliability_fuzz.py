"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis, in-process ASGI).

Every operation the schema lists gets schema-conforming (positive) and, where it takes input,
schema-violating (negative) requests: derandomized (the same examples every run), a bounded number
per operation. No response may be a 5xx, and every 4xx must be the service's JSON error shape.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi
from service_helpers import write_linear_model

from service.app import create_app
from service.settings import Settings

# examples per (operation, mode); POST /recognize is where the input is, so it gets the most
EXAMPLES = {"POST /recognize": 240}
MODELS = ("linear", "image")
DEFAULT_EXAMPLES = 25


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    zoo = tmp_path_factory.mktemp("zoo")
    write_linear_model(zoo / "linear", ["stand", "walk", "fall"], length=8, fps=10, stride=2)
    write_linear_model(zoo / "image", ["a", "b"], length=8, fps=10, stride=2, coordinates="image", seed=2)
    app = create_app(
        Settings(
            models_dir=zoo,
            default_model="linear",
            providers=["cpu"],
            warmup=False,
            max_upload_mb=1.0,
            max_json_mb=1.0,
            max_video_seconds=120.0,
        )
    )
    with asgi.get_client(app) as client:  # starts the app's lifespan (schemathesis keeps it running)
        deadline = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.1)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()


def _takes_input(op: Any) -> bool:
    return bool(op.body or op.query or op.path_parameters or op.headers)


def _fuzzer(
    op: Any,
    label: str,
    mode: GenerationMode,
    statuses: Counter[int],
    per_op: Counter[str],
    examples: int,
    **fixed: Any,
) -> Any:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode, **fixed))
    def fuzz(case: Any) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        per_op[f"{label} ({mode.value})"] += 1
        where = f"{label} {mode.value}: {response.status_code} {response.text[:400]!r}\n"
        assert response.status_code < 500, where + case.as_curl_command()
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"], where
            assert "Traceback" not in response.text, where

    return fuzz


@pytest.mark.timeout(120)
def test_fuzz_the_http_api_from_its_openapi_schema(schema: Any) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /recognize", "GET /models", "GET /health/ready", "GET /results/{result_id}"} <= labels
    statuses: Counter[int] = Counter()
    per_op: Counter[str] = Counter()
    unsatisfiable: list[str] = []
    t0 = time.monotonic()
    for op in operations:
        label = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _takes_input(op):
                continue

            passes: list[dict[str, Any]] = [{}]
            if label == "POST /recognize":  # random model names stop at 404: also fuzz real models
                passes += [{"query": {"model": name}} for name in MODELS]
            for fixed in passes:
                examples = EXAMPLES.get(label, DEFAULT_EXAMPLES) // len(passes)
                try:
                    _fuzzer(op, label, mode, statuses, per_op, examples, **fixed)()
                except Unsatisfiable:  # e.g. a free-form string path parameter cannot be made invalid
                    assert mode is GenerationMode.NEGATIVE, label
                    unsatisfiable.append(f"{label} ({mode.value})")
    elapsed = time.monotonic() - t0
    total = sum(per_op.values())
    print(f"\nfuzz: {total} requests in {elapsed:.1f} s; statuses {dict(sorted(statuses.items()))}")
    for name, n in sorted(per_op.items()):
        print(f"  {name}: {n}")
    print(f"  no schema-violating input exists for: {unsatisfiable}")
    assert per_op["POST /recognize (positive)"] >= 150 and per_op["POST /recognize (negative)"] >= 100
    assert statuses[200] >= 20 and any(400 <= s < 500 for s in statuses)
