"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis, in-process ASGI).

Every operation the schema lists gets schema-conforming (positive) and, where it takes input,
schema-violating (negative) requests, derandomized (the same examples every run) and bounded per
operation. ``POST /recognize`` is fuzzed three ways: as published (multipart or JSON, any model
name), and JSON-only with each loaded model's name fixed, so that generated skeleton sequences get
past the model lookup into the pipeline. No response may be a 5xx, and every 4xx must be the
service's JSON error shape without a stack trace.
"""

from __future__ import annotations

import copy
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

from service.app import create_app
from service.core.config import Settings
from tests.service_helpers import write_linear_model

RECOGNIZE = "POST /recognize"
MODELS = ("linear", "image")
# (schema variant, fixed query, positive examples, negative examples) for POST /recognize
RECOGNIZE_PASSES = (("published", None, 30, 30), ("json", "linear", 45, 35), ("json", "image", 25, 0))
OTHER_EXAMPLES = 20


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
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
        deadline = time.monotonic() + 180
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.1)
    try:
        published = schemathesis.openapi.from_asgi("/openapi.json", app)
        raw = copy.deepcopy(app.openapi())
        del raw["paths"]["/recognize"]["post"]["requestBody"]["content"]["multipart/form-data"]
        json_only = schemathesis.openapi.from_dict(raw)
        json_only.app = app
        yield {"published": published, "json": json_only}
    finally:
        asgi.shutdown_lifespans()


def _takes_input(op: Any) -> bool:
    return bool(op.body or op.query or op.path_parameters or op.headers)


def _fuzz(op: Any, name: str, mode: GenerationMode, examples: int, stats: Counter[str], **fixed: Any) -> None:
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
        stats[name] += 1
        stats[f"status {response.status_code}"] += 1
        where = f"{name}: {response.status_code} {response.text[:400]!r}\n"
        assert response.status_code < 500, where + case.as_curl_command()
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"], where
            assert "Traceback" not in response.text, where

    fuzz()


@pytest.mark.timeout(300)  # ~14 s alone here; CI runners are 5-6x slower, and share their cores
def test_fuzz_the_http_api_from_its_openapi_schema(schemas: dict[str, Any]) -> None:
    published = schemas["published"]
    operations = {f"{r.ok().method.upper()} {r.ok().path}": r.ok() for r in published.get_all_operations()}
    assert {RECOGNIZE, "GET /models", "GET /health/ready", "GET /results/{result_id}"} <= set(operations)
    stats: Counter[str] = Counter()
    impossible: list[str] = []
    t0 = time.monotonic()
    for label, op in operations.items():
        if label == RECOGNIZE:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _takes_input(op):
                continue
            try:
                _fuzz(op, f"{label} {mode.value}", mode, OTHER_EXAMPLES, stats)
            except Unsatisfiable:  # a free-form string path parameter cannot be made invalid
                assert mode is GenerationMode.NEGATIVE, label
                impossible.append(label)
    for variant, model, positive, negative in RECOGNIZE_PASSES:
        op = schemas[variant]["/recognize"]["POST"]
        fixed = {"query": {"model": model}} if model else {}
        for mode, n in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):
            if n:
                _fuzz(op, f"{RECOGNIZE} {variant} model={model or '*'} {mode.value}", mode, n, stats, **fixed)
    elapsed = time.monotonic() - t0
    statuses = {k: v for k, v in stats.items() if k.startswith("status")}
    total = sum(statuses.values())
    print(f"\nfuzz: {total} requests in {elapsed:.1f} s; {dict(sorted(statuses.items()))}")
    for name, n in sorted(stats.items()):
        if not name.startswith("status"):
            print(f"  {name}: {n}")
    print(f"  no schema-violating input exists for: {impossible}")
    assert sum(v for k, v in stats.items() if k.startswith(RECOGNIZE)) >= 150
    # Which examples are drawn depends on what this process imported before (same seed; measured:
    # 20-47 requests answered 200/202 depending on the test files run first in the worker), so the
    # floor only guards against everything being stopped at validation.
    past = stats["status 200"] + stats["status 202"]
    assert past >= 10, "too few requests got past validation into the pipeline"
