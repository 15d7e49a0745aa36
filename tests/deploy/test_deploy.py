"""Deployment files, checked without a Docker engine or a GPU (scripts/check_deploy.py does the work).

* hadolint passes on the Dockerfile (and fails on a bad one: the linter really runs);
* the compose files validate against the Compose Specification schema, and every documented
  combination merges (real ``docker compose config``) into what docs/deployment.md promises;
* nginx.conf parses and proxies WebSockets to the replicas' network alias;
* one source of pins: the images install requirements/*.txt only, constraints.txt pins everything
  they pull in at the installed version, and nothing else names a version;
* the image's base matches the CUDA / TensorRT majors the pinned onnxruntime-gpu was built for;
* the image's ENTRYPOINT + CMD, run on this host in a copy of the image's file layout (no torch
  importable), starts the service: /health/live answers 200, the HEALTHCHECK agrees with
  /health/ready, and SIGTERM stops it;
* the bench image's ENTRYPOINT, run the same way on the real clips as Compose mounts them, benchmarks
  the shipped models (PyTorch from their checkpoints) into the results folder.
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from skeleton.paths import REPO_ROOT as REPO


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cd = _load("check_deploy", REPO / "scripts" / "check_deploy.py")
healthcheck = _load("deploy_healthcheck", REPO / "deploy" / "healthcheck.py")

SERVICE_STAGES = ("service", "service-cpu")


@pytest.fixture(scope="module")
def dockerfile() -> Any:
    return cd.parse_dockerfile()


# --------------------------------------------------------------------------- hadolint


def test_hadolint_passes() -> None:
    result = cd.run_hadolint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nRUN pip install requests\n")
    result = cd.run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3015", "DL3013"):  # untagged base, recommends, unpinned pip
        assert rule in result.stdout, result.stdout


# --------------------------------------------------------------------------- Dockerfile


def test_targets_and_default(dockerfile: Any) -> None:
    names = [s.name for s in dockerfile.stages]
    assert {"service", "service-cpu", "export"} <= set(names)
    assert names[-1] == "service", "the default build target (last stage) is the GPU service"
    for name in (*SERVICE_STAGES, "export"):  # multi-stage: runtimes copy a venv built elsewhere
        assert any(c.from_stage for c in cd.stage_copies(dockerfile, name)), name


def test_gpu_base_matches_onnxruntime_build(dockerfile: Any) -> None:
    """CUDA major of the base image == the one onnxruntime-gpu was built with; cuDNN runtime; the
    TensorRT pin's major == the libnvinfer soname ORT's TensorRT provider links; cu suffix agrees."""
    from onnxruntime.capi import build_and_package_info as info

    ort_cuda_major = int(str(info.cuda_version).split(".")[0])
    for name in ("service", "export"):
        base = dockerfile.resolve(dockerfile.stage(name).base)
        m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-(runtime|devel)-ubuntu[\d.]+", base)
        assert m, f"{name}: base {base} is not a pinned nvidia/cuda cuDNN image"
        assert int(m.group(1)) == ort_cuda_major, f"{base} vs onnxruntime built with CUDA {info.cuda_version}"

    capi = Path(info.__file__).parent
    trt_provider = (capi / "libonnxruntime_providers_tensorrt.so").read_bytes()
    nvinfer = re.search(rb"libnvinfer\.so\.(\d+)", trt_provider)
    cudart = re.search(rb"libcudart\.so\.(\d+)", trt_provider)
    assert nvinfer and cudart
    pins = cd.read_constraints()
    trt = {k: v for k, v in pins.items() if k.startswith("tensorrt")}
    assert trt, "TensorRT is pinned in constraints.txt"
    for key, (_, version) in trt.items():
        assert version.split(".")[0] == nvinfer.group(1).decode(), (
            f"{key}=={version} vs libnvinfer.so.{nvinfer[1]!r}"
        )
        assert key.startswith(f"tensorrt-cu{int(cudart.group(1))}"), key


def test_service_images_carry_no_torch(dockerfile: Any) -> None:
    for name in SERVICE_STAGES:
        venvs = [c.from_stage for c in cd.stage_copies(dockerfile, name) if c.dest == "/opt/venv"]
        assert len(venvs) == 1, name
        installed = [
            Path(arg).name
            for stage in dockerfile.lineage(dockerfile.stage(venvs[0]))
            for s, _, words in cd.pip_installs(dockerfile)
            if s is stage
            for i, arg in enumerate(words)
            if i > 0 and words[i - 1] == "-r"
        ]
        assert "service.txt" in installed and "train.txt" not in installed and "dev.txt" not in installed
        roots = {n for n, _ in cd.root_requirements(installed)}
        versions, _ = cd.installed_closure(cd.root_requirements(["service.txt"]))
        assert "torch" not in roots and "torch" not in versions, f"{name} would install torch"


def test_service_images_copy_the_packages_the_service_imports(dockerfile: Any) -> None:
    """The service stages hold `service` and the packages it may import (tests/test_architecture.py,
    docs/architecture.md): none of the torch side (models, training, export)."""
    from tests.test_architecture import ALLOWED

    for name in SERVICE_STAGES:
        packages = {
            c.sources[0].rstrip("/")
            for c in cd.stage_copies(dockerfile, name)
            if not c.from_stage and c.sources[0].rstrip("/") in ALLOWED
        }
        assert packages == {"service", *ALLOWED["service"]}, name


def test_service_stages_runtime_contract(dockerfile: Any) -> None:
    for name in SERVICE_STAGES:
        stage = dockerfile.stage(name)
        env = cd.stage_env(dockerfile, name)
        assert env["SKELACT_HOST"] == "0.0.0.0" and env["SKELACT_PORT"] == "8000", name
        assert cd.entrypoint_command(dockerfile, name) == ["python", "-m", "service", "serve"]
        user = stage.last("USER")
        assert user is not None and re.fullmatch(r"[1-9]\d*(:\d+)?", user.value), (
            f"{name}: numeric non-root USER"
        )
        assert stage.last("EXPOSE") is not None and stage.last("EXPOSE").value == "8000"

        # the shipped models are baked in where SKELACT_MODELS_DIR points (a volume can replace them)
        copies = cd.stage_copies(dockerfile, name)
        assert any(
            c.sources == ("model_zoo/",) and c.dest.rstrip("/") == env["SKELACT_MODELS_DIR"] for c in copies
        ), name

        # HEALTHCHECK: exec form, python + the copied script, /health/ready
        check = stage.last("HEALTHCHECK")
        assert check is not None and "CMD" in check.value
        command = cd.exec_form(check.value.split("CMD", 1)[1].strip())
        assert command[0] == "python" and command[-1] == "/health/ready"
        assert any(c.dest == command[1] and c.sources == ("deploy/healthcheck.py",) for c in copies)

        # OpenGL / GLib runtime libraries that opencv-contrib-python (MediaPipe) needs
        apt = " ".join(i.value for i in stage.all("RUN") if "apt-get install" in i.value)
        assert "libgl1" in apt and "libglib2.0-0" in apt, name


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    out = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z")
            for part in re.split(r"(\*\*)", pattern)
        )
        out.append((negate, re.compile(f"(?s:{regex})")))
    return out


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a path is excluded when it or a parent matches; the last match wins."""
    parts = Path(path).parts
    ignored = False
    for i in range(1, len(parts) + 1):
        candidate = "/".join(parts[:i])
        for negate, regex in patterns:
            if regex.fullmatch(candidate):
                ignored = not negate
    return ignored


def test_copied_sources_exist_and_are_in_the_build_context(dockerfile: Any) -> None:
    patterns = _dockerignore_patterns()
    for forbidden in (".git", ".venv", ".env", "service/__pycache__", "model_zoo/x/trt_cache"):
        assert _ignored(forbidden, patterns), f".dockerignore should exclude {forbidden}"
    for stage in dockerfile.stages:
        for copy in cd.stage_copies(dockerfile, stage.name) if stage.name else []:
            if copy.from_stage:
                continue
            for src in copy.sources:
                assert (REPO / src).exists(), f"Dockerfile:{copy.line}: {src} missing from the repository"
                assert not _ignored(src.rstrip("/"), patterns), (
                    f"Dockerfile:{copy.line}: {src} is in .dockerignore"
                )


# --------------------------------------------------------------------------- one source of pins


def test_one_source_of_pins(dockerfile: Any) -> None:
    assert cd.check_dockerfile_pins(dockerfile) == []
    assert cd.check_constraints() == []
    # the pins are resolved in this venv: the images must use the same Python minor version
    assert dockerfile.args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_pin_check_catches_pins_outside_constraints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM ubuntu:24.04 AS x\nWORKDIR /build\nCOPY requirements/service.txt requirements/\n"
        "RUN pip install numpy==1.26.4 && python -m pip install -r requirements/service.txt\n"
    )
    problems = cd.check_dockerfile_pins(cd.parse_dockerfile(bad))
    assert any("numpy==1.26.4" in p for p in problems), problems
    assert any("constraints.txt" in p for p in problems), problems  # not copied along


def test_pin_check_catches_pins_in_install_scripts(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text(
        "pip install -r requirements/dev.txt\npip install 'torch<3'\n"
    )
    (tmp_path / "Makefile").write_text("setup:\n\t.venv/bin/python -m pip install --upgrade pip ruff==0.1\n")
    problems = cd.check_scripts_unpinned(tmp_path)
    assert len(problems) == 2 and "torch<3" in problems[1] and "ruff==0.1" in problems[0], problems


# --------------------------------------------------------------------------- compose


@pytest.mark.parametrize("name", cd.COMPOSE_FILES)
def test_compose_file_matches_the_compose_spec(name: str) -> None:
    assert cd.schema_errors(cd.load_compose_file(REPO / name)) == []


def test_compose_schema_rejects_mistakes() -> None:
    assert cd.schema_errors({"services": {"s": {"image": "x", "restart_policy": "always"}}})
    gpus = {"driver": "nvidia", "gpus": 1}  # not a device field; and capabilities is required
    assert cd.schema_errors(
        {"services": {"s": {"deploy": {"resources": {"reservations": {"devices": [gpus]}}}}}}
    )


@pytest.fixture(scope="module")
def variants() -> dict[str, dict[str, Any]]:
    return {
        name: cd.compose_config(files, profiles) for name, (files, profiles) in cd.COMPOSE_VARIANTS.items()
    }


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return devices


# ids "compose-<variant>": a bare "gpu" id would read as the `gpu` marker (tests/conftest.py)
@pytest.mark.parametrize("variant", list(cd.COMPOSE_VARIANTS), ids=lambda v: f"compose-{v}")
def test_merged_variant_matches_the_compose_spec(variants: dict[str, dict[str, Any]], variant: str) -> None:
    assert cd.schema_errors(variants[variant]) == []


def test_gpu_variant(variants: dict[str, dict[str, Any]], dockerfile: Any) -> None:
    config = variants["gpu"]
    assert set(config["services"]) == {"skelact"}, "export runs only with its profile"
    s = config["services"]["skelact"]
    assert s["build"]["target"] == "service"
    assert _gpu_devices(s) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert [(p["target"], p["published"]) for p in s["ports"]] == [(8000, "8000")]
    assert s["environment"]["SKELACT_PORT"] == "8000" and s["environment"]["SKELACT_HOST"] == "0.0.0.0"
    assert s["restart"] == "unless-stopped"
    assert s["healthcheck"]["test"] == ["CMD", "python", "/app/deploy/healthcheck.py", "/health/ready"]
    mounts = {v["target"]: v for v in s["volumes"]}
    models_dir = s["environment"]["SKELACT_MODELS_DIR"]
    assert mounts[models_dir]["type"] == "volume" and mounts[models_dir]["source"] == "models"
    # the named volume starts as a copy of the image's models, which are baked in at that path
    assert models_dir == cd.stage_env(dockerfile, "service")["SKELACT_MODELS_DIR"]


def test_export_service(variants: dict[str, dict[str, Any]], dockerfile: Any) -> None:
    config = variants["gpu+export"]
    export = config["services"]["export"]
    assert export["profiles"] == ["export"]
    assert export["build"]["target"] == "export"
    assert _gpu_devices(export) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert cd.entrypoint_command(dockerfile, "export")[:3] == ["python", "-m", "export"]
    assert export["command"] == ["tensorrt", "--models-dir", "/models"]
    assert {(v["source"], v["target"]) for v in export["volumes"]} == {("models", "/models")}
    assert export["restart"] == "no"


def test_bench_service(variants: dict[str, dict[str, Any]], dockerfile: Any) -> None:
    bench = variants["gpu+bench"]["services"]["bench"]
    assert bench["profiles"] == ["bench"] and bench["build"]["target"] == "bench"
    assert _gpu_devices(bench) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert cd.entrypoint_command(dockerfile, "bench") == ["python", "-m", "bench"]
    assert bench["restart"] == "no" and bench["user"] == "10001:10001"
    env = bench["environment"]
    mounts = {v["target"]: v for v in bench["volumes"]}
    # the clips: the team's data folder next to the repository, read-only
    data = mounts[env["SKELACT_DATA_DIR"]]
    assert data["type"] == "bind" and data["read_only"] is True
    # paths compared resolved on both sides: ../shared may be a symlink (compose does not resolve it)
    assert Path(data["source"]).resolve() == (REPO.parent / "shared" / "data").resolve()
    # results, and every cache the run writes, land in the one writable mount
    results = mounts[env["SKELACT_BENCH_OUT"]]
    assert results["type"] == "bind" and not results.get("read_only")
    assert Path(results["source"]).resolve() == (REPO / "bench" / "results-gpu").resolve()
    assert env["SKELACT_CACHE_DIR"].startswith(env["SKELACT_BENCH_OUT"] + "/")
    assert "bench/results-gpu/" in (REPO / ".gitignore").read_text()
    assert variants["gpu+bench"]["services"]["skelact"]["image"] != bench["image"]


def test_bench_image_runs_from_its_layout(dockerfile: Any, data_dir: Path, tmp_path: Path) -> None:
    """The bench image's files are enough: its ENTRYPOINT, in a copy of its layout with the clips
    where Compose mounts them, benchmarks every shipped model with PyTorch rebuilt from the baked-in
    checkpoints, writes to $SKELACT_BENCH_OUT and leaves the docs alone (they are not in the image)."""
    work, image_env = _stage_image_layout(dockerfile, "bench", tmp_path / "rootfs")
    assert not (work / "docs").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKELACT_") and k != "PYTHONPATH"}
    env.update(image_env)
    env.update({"SKELACT_DATA_DIR": str(data_dir), "HOME": str(tmp_path / "home")})
    command = cd.entrypoint_command(dockerfile, "bench")
    exe = shutil.which(command[0], path=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    assert exe is not None
    proc = subprocess.run(
        [exe, *command[1:], "classifier", "--quick", "--no-plots"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = Path(image_env["SKELACT_BENCH_OUT"])
    results = json.loads((out / "results.json").read_text())
    section = results["sections"]["classifier"]
    assert Path(section["models_dir"]) == Path(image_env["SKELACT_MODELS_DIR"])
    shipped = sorted(p.parent.name for p in (REPO / "model_zoo").glob("*/manifest.json"))
    assert sorted(m["folder"] for m in section["models"]) == shipped
    for model in section["models"]:
        assert model["torch_weights"] == "checkpoint", model
        runtimes = {r["runtime"] for r in model["rows"] if r["batch"] == 16}
        assert runtimes == {"onnxruntime", "pytorch"}, model["rows"]
    assert (out / "report.md").is_file()


def test_cpu_variant(variants: dict[str, dict[str, Any]]) -> None:
    s = variants["cpu"]["services"]["skelact"]
    assert s["build"]["target"] == "service-cpu"
    assert _gpu_devices(s) == []
    assert s["environment"]["SKELACT_PROVIDERS"] == "cpu"
    assert s["image"] != variants["gpu"]["services"]["skelact"]["image"]
    assert _gpu_devices(variants["cpu+scale"]["services"]["skelact"]) == []


def test_scale_variant(variants: dict[str, dict[str, Any]]) -> None:
    config = variants["scale"]
    s, proxy = config["services"]["skelact"], config["services"]["proxy"]
    assert s.get("ports", []) == [], "replicas are reached through nginx only"
    assert s["deploy"]["replicas"] == 2
    assert "skelact-backend" in s["networks"]["default"]["aliases"]
    assert proxy["depends_on"]["skelact"]["condition"] == "service_healthy"
    assert [(p["target"], p["published"]) for p in proxy["ports"]] == [(8080, "8000")]
    conf = {v["target"]: v for v in proxy["volumes"]}["/etc/nginx/nginx.conf"]
    assert Path(conf["source"]).resolve() == (REPO / "deploy" / "nginx.conf").resolve() and conf["read_only"]
    assert re.fullmatch(r"nginx:1\.(2[89]|[3-9]\d)[\w.-]*", proxy["image"]), (
        "nginx >= 1.28: upstream `resolve`"
    )

    more = cd.compose_config(cd.COMPOSE_VARIANTS["scale"][0], env={"SKELACT_REPLICAS": "5"})
    assert more["services"]["skelact"]["deploy"]["replicas"] == 5


def test_multi_gpu_variant(variants: dict[str, dict[str, Any]]) -> None:
    services = variants["multi-gpu"]["services"]
    for name, gpu in (("skelact", "0"), ("skelact-gpu1", "1")):
        assert _gpu_devices(services[name]) == [
            {"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}
        ]
        assert "skelact-backend" in services[name]["networks"]["default"]["aliases"]
        assert services[name].get("ports", []) == []


# --------------------------------------------------------------------------- nginx


def _find(directives: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
    for d in directives:
        if d["directive"] == name:
            yield d
        yield from _find(d.get("block", []), name)


def test_nginx_conf_parses() -> None:
    assert cd.nginx_problems() == []


def test_nginx_conf_rejects_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "nginx.conf"
    text = (REPO / "deploy" / "nginx.conf").read_text()
    bad.write_text(
        text.replace("proxy_http_version 1.1;", "proxy_http_version 1.1").replace(
            "server_tokens off;", "server_tokens off; proxy_pas http://x;"
        )
    )
    problems = cd.nginx_problems(bad)
    assert any("proxy_http_version" in p for p in problems) and any("proxy_pas" in p for p in problems)


def test_nginx_proxies_websockets_to_the_replicas(variants: dict[str, dict[str, Any]]) -> None:
    conf = cd.nginx_directives()
    upstreams = {u["args"][0]: u for u in _find(conf, "upstream")}
    location = next(loc for loc in _find(conf, "location") if loc["args"] == ["/"])
    body = {(d["directive"], *d["args"]) for d in location["block"]}
    target = next(d["args"][0] for d in location["block"] if d["directive"] == "proxy_pass")
    upstream = upstreams[target.removeprefix("http://")]
    assert ("proxy_http_version", "1.1") in body
    assert ("proxy_set_header", "Upgrade", "$http_upgrade") in body
    assert ("proxy_set_header", "Connection", "$connection_upgrade") in body
    maps = [m for m in _find(conf, "map") if m["args"] == ["$http_upgrade", "$connection_upgrade"]]
    assert maps and ("default", "upgrade") in {(e["directive"], *e["args"]) for e in maps[0]["block"]}

    # the upstream resolves the replicas' shared alias on the service's container port
    servers = [d["args"] for d in upstream["block"] if d["directive"] == "server"]
    assert [a[0] for a in servers] == ["skelact-backend:8000"] and "resolve" in servers[0]
    assert any(d["directive"] == "zone" for d in upstream["block"]), "`resolve` needs a shared zone"
    assert any(d["directive"] == "resolver" and d["args"][0] == "127.0.0.11" for d in _find(conf, "resolver"))
    aliases = variants["scale"]["services"]["skelact"]["networks"]["default"]["aliases"]
    assert servers[0][0].split(":")[0] in aliases
    assert (
        servers[0][0].split(":")[1] == variants["gpu"]["services"]["skelact"]["environment"]["SKELACT_PORT"]
    )

    # nginx listens where the proxy's published port points, and lets the largest upload through
    listen = next(_find(conf, "listen"))["args"][0]
    assert int(listen) == variants["scale"]["services"]["proxy"]["ports"][0]["target"]
    size = next(_find(conf, "client_max_body_size"))["args"][0]
    from service.core.config import Settings

    assert int(size.removesuffix("m")) >= Settings.model_fields["max_upload_mb"].default


# --------------------------------------------------------------------------- healthcheck script


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/health/ready" else 503
        body = b'{"ready": true}' if code == 200 else b'{"ready": false}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_healthcheck_script_against_a_real_http_server() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        ok, detail = healthcheck.check("/health/ready", port=port)
        assert ok and "200" in detail
        ok, detail = healthcheck.check("/health/other", port=port)
        assert not ok and detail.startswith("503")
        env = {**os.environ, "SKELACT_PORT": str(port)}
        script = str(REPO / "deploy" / "healthcheck.py")
        assert subprocess.run([sys.executable, script], env=env, timeout=30).returncode == 0
        failed = subprocess.run(
            [sys.executable, script, "/nope"], env=env, capture_output=True, text=True, timeout=30
        )
        assert failed.returncode == 1 and "503" in failed.stderr
    finally:
        server.shutdown()
        server.server_close()
    ok, detail = healthcheck.check("/health/ready", port=port, timeout=2)  # nobody listens any more
    assert not ok


# ------------------------------------------------------------------- the image's entrypoint, on the host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stage_image_layout(dockerfile: Any, stage_name: str, root: Path) -> tuple[Path, dict[str, str]]:
    """Copy what the stage COPYs from the build context into ``root`` (the image's paths under it);
    return the WORKDIR there and the stage's ENV with absolute paths mapped under ``root``."""
    workdir = "/"
    for stage in reversed(dockerfile.lineage(dockerfile.stage(stage_name))):
        for instruction in stage.instructions:
            if instruction.keyword == "WORKDIR":
                workdir = os.path.join(workdir, instruction.value)
            elif instruction.keyword == "COPY":
                copy = next(c for c in cd.stage_copies(dockerfile, stage_name) if c.line == instruction.line)
                if copy.from_stage:
                    continue  # the venv: this host's venv plays its part
                for src in copy.sources:
                    dest = root / os.path.join(workdir, copy.dest).lstrip("/")
                    source = REPO / src
                    if source.is_dir():
                        shutil.copytree(
                            source,
                            dest,
                            dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "trt_cache"),
                        )
                    else:
                        target = dest / source.name if copy.dest.endswith("/") else dest
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(source, target)
    env = {}
    for key, value in cd.stage_env(dockerfile, stage_name).items():
        if key == "PATH":
            continue
        if value.startswith("/"):
            mapped = root / value.lstrip("/")
            mapped.mkdir(parents=True, exist_ok=True)  # the image creates them (install -d)
            value = str(mapped)
        env[key] = value
    work = root / workdir.lstrip("/")
    work.mkdir(parents=True, exist_ok=True)
    return work, env


def _get(url: str, timeout: float = 5.0, api_key: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-API-Key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage_name", SERVICE_STAGES)
def test_image_entrypoint_starts_the_service_on_the_host(
    dockerfile: Any, stage_name: str, tmp_path: Path
) -> None:
    command = cd.entrypoint_command(dockerfile, stage_name)
    work, image_env = _stage_image_layout(dockerfile, stage_name, tmp_path / "rootfs")

    # torch is not in the image: make it unimportable here too
    shim = tmp_path / "no-torch" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("torch is not installed in the service image")\n')

    port = _free_port()
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKELACT_") and k != "PYTHONPATH"}
    env.update(image_env)
    env.update(
        {
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(shim.parent),
            "HOME": str(tmp_path / "home"),
            "SKELACT_HOST": "127.0.0.1",  # the image binds 0.0.0.0; keep the test off the network
            "SKELACT_PORT": str(port),
            # keys on: the probe must still pass (readiness and liveness answer probes without a key)
            "SKELACT_API_KEYS": "probe-key-1,other-key",
        }
    )
    exe = shutil.which(command[0], path=env["PATH"])
    assert exe is not None, command
    log = tmp_path / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [exe, *command[1:]],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        status = 0
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"`{' '.join(command)}` exited {proc.returncode}:\n{log.read_text()[-5000:]}"
            )
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/health/live", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"/health/live never answered 200:\n{log.read_text()[-5000:]}"

        # the image's HEALTHCHECK command, as Docker runs it, agrees with GET /health/ready
        check = dockerfile.stage(stage_name).last("HEALTHCHECK")
        check_cmd = cd.exec_form(check.value.split("CMD", 1)[1].strip())
        check_cmd[1] = str(tmp_path / "rootfs" / check_cmd[1].lstrip("/"))
        ready, body = 0, ""
        while time.monotonic() < deadline and ready != 200:  # open to probes: no key needed
            ready, body = _get(f"http://127.0.0.1:{port}/health/ready", timeout=30)
            time.sleep(0.5)
        assert ready == 200 and set(json.loads(body)) == {"status", "ready", "reason"}, body
        detailed = _get(f"http://127.0.0.1:{port}/health/ready", timeout=30, api_key="probe-key-1")[1]
        assert "models" in json.loads(detailed), "the details need a key"
        assert _get(f"http://127.0.0.1:{port}/models", timeout=30)[0] == 401

        def probe(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
            exe = shutil.which(check_cmd[0], path=env["PATH"]) or check_cmd[0]
            cmd = [exe, *check_cmd[1:]]
            return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=60)

        assert probe(env).returncode == 0
        keyless = probe({k: v for k, v in env.items() if k != "SKELACT_API_KEYS"})
        assert keyless.returncode == 0, keyless.stderr
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"the service ignored SIGTERM for 30 s:\n{log.read_text()[-3000:]}")
    assert code in (0, -signal.SIGTERM), f"exit {code} after SIGTERM:\n{log.read_text()[-3000:]}"


# --------------------------------------------------------------------------- docs in sync


def test_deployment_docs_are_in_sync(dockerfile: Any, variants: dict[str, dict[str, Any]]) -> None:
    from service.core.config import Settings

    text = (REPO / "docs" / "deployment.md").read_text()
    undocumented = [
        f"SKELACT_{n.upper()}" for n in Settings.model_fields if f"`SKELACT_{n.upper()}`" not in text
    ]
    assert not undocumented, f"add to docs/deployment.md (Configuration): {undocumented}"
    for name in cd.COMPOSE_FILES:
        for var in re.findall(r"\$\{(SKELACT_\w+)", (REPO / name).read_text()):
            assert f"`{var}`" in text, f"{name} uses {var}: document it in docs/deployment.md"
    for stage in ("service", "export"):
        assert dockerfile.resolve(dockerfile.stage(stage).base) in text, f"base image of {stage}"
    export = variants["gpu+export"]["services"]["export"]
    command = " ".join(cd.entrypoint_command(dockerfile, "export")[:3] + export["command"])
    assert command in text, f"docs/deployment.md should show the export command: {command}"
    for files, _ in cd.COMPOSE_VARIANTS.values():
        for f in files:
            assert f in text
