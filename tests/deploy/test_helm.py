"""The Helm chart deploy/helm/skelact, checked without a cluster (scripts/check_helm.py does the work).

* ``helm lint --strict`` and ``helm template`` pass with the default, CPU and production values, and
  every rendered object validates with ``kubernetes-validate --strict`` on two Kubernetes versions
  (and the validator really rejects a misspelled field);
* values.schema.json refuses bad values, naming the field; render-time checks refuse values the
  schema cannot relate (a grace period shorter than the drain, a stream target above capacity...);
* the rendered objects agree with the service: settings names and values parse with its settings
  model, probe paths are its routes (open ones where the kubelet sends no key), the autoscaling
  metric is one its /metrics exports, the ingress limits follow its upload and idle limits, and the
  image paths the chart relies on are the Dockerfile's.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import check_deploy as cd
from scripts import check_helm as ch
from skeleton.paths import REPO_ROOT as REPO

# Settings the chart already sets that the service does not have yet (built in parallel). When the
# service gains one, this test says to drop it here.
PLANNED_SETTINGS: frozenset[str] = frozenset()
CRD_KINDS = frozenset({"ServiceMonitor", "ScaledObject", "HTTPRoute"})
METRIC_NAME = re.compile(r"\bskelact_[a-z_]+\b")
KEYS = {"apiKeys.existingSecret": "my-keys"}


@pytest.fixture(scope="module")
def facts() -> Any:
    return ch.service_facts()


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def environment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """SKELACT_* as the container gets them: the ConfigMap (envFrom), then env (which wins)."""
    env: dict[str, Any] = dict(one(docs, "ConfigMap")["data"])
    for var in container(docs)["env"]:
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def render_error(sets: dict[str, str] | None = None, files: tuple[str, ...] = ()) -> str:
    result = ch.template(files, sets)
    assert result.returncode != 0, f"helm accepted {sets}"
    return str(result.stderr)


@pytest.fixture(scope="module", params=sorted(ch.VARIANTS))
def values_files(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The values files of one documented variant (default, cpu, production, cpu+production)."""
    files: tuple[str, ...] = ch.VARIANTS[request.param]
    return files


# --------------------------------------------------------------------------- tools


def test_helm_is_the_pinned_binary() -> None:
    """scripts/setup.sh installed the helm it pins (sha256), and it runs."""
    setup = (REPO / "scripts" / "setup.sh").read_text()
    pinned = re.search(r'^helm_sha256="([0-9a-f]{64})"', setup, re.M)
    assert pinned, "scripts/setup.sh pins helm's sha256"
    exe = ch.helm_binary()
    assert hashlib.sha256(exe.read_bytes()).hexdigest() == pinned.group(1), exe
    version = ch.helm("version", "--short")
    assert version.returncode == 0 and version.stdout.startswith("v3.17."), version.stdout


def test_kubernetes_validate_ships_the_versions() -> None:
    from kubernetes_validate import utils

    shipped = utils.all_versions()
    for version in ch.KUBE_VERSIONS:
        assert version in shipped, f"kubernetes-validate has no schemas for {version}: {shipped}"


# --------------------------------------------------------------------------- lint, render, validate


def test_lint(values_files: tuple[str, ...]) -> None:
    result = ch.lint(values_files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_rendered_objects_validate_strictly(values_files: tuple[str, ...]) -> None:
    """Every object validates against the Kubernetes schemas of each version; only the CRDs' kinds,
    which it has no schema for, are left (checked by test_custom_resources)."""
    for kube in ch.KUBE_VERSIONS:
        rendered = ch.template(values_files, kube_version=kube)
        assert rendered.returncode == 0, rendered.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
        assert {"Deployment", "Service", "ConfigMap"} <= kinds
        checked = ch.kubernetes_validate(rendered.stdout, (kube,))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for line in checked.stdout.splitlines():
            assert line.startswith("WARN") and any(f"kind {k} " in line for k in CRD_KINDS), line


def test_validation_catches_a_misspelled_field() -> None:
    """The strict schemas really run: a field the chart passes through unchecked is refused."""
    rendered = ch.template(sets={"podSecurityContext.runAsUsr": "1"})
    assert rendered.returncode == 0, rendered.stderr
    checked = ch.kubernetes_validate(rendered.stdout)
    assert checked.returncode != 0
    assert "runAsUsr" in checked.stdout, checked.stdout


def test_production_has_what_a_cluster_needs() -> None:
    docs = ch.render(ch.VARIANTS["production"])
    kinds = {d["kind"] for d in docs}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "ServiceMonitor"} <= kinds
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one(docs, "Ingress")["spec"]["tls"][0]["hosts"] == ["skelact.example.com"]
    assert "replicas" not in one(docs, "Deployment")["spec"], "the HPA owns the replica count"
    assert not objects(docs, "Secret"), "production reads its keys from an existing Secret"


# --------------------------------------------------------------------------- values the chart refuses


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": "3"}, "replicas"),  # unknown key (the chart calls it replicaCount)
        ({"gpu.count": "1.5"}, "gpu.count"),
        ({"terminationGracePeriodSeconds": "-5"}, "terminationGracePeriodSeconds"),
        ({"config.max_stream": "8"}, "max_stream"),  # not a service setting
        ({"config.max_streams": "many"}, "config.max_streams"),
        ({"config.providers": "{gpu}"}, "config.providers"),
        ({"config.ema_alpha": "0"}, "config.ema_alpha"),  # the service's own bound (> 0)
        ({"config.port": "9000"}, "port"),  # set by the chart, not through config
        ({"image.pullPolicy": "Sometimes"}, "image.pullPolicy"),
        ({"autoscaling.minReplicas": "0"}, "autoscaling.minReplicas"),
        ({"ingress.path": "api"}, "ingress.path"),
        ({"persistence.accessModes": "{ReadWriteSometimes}"}, "persistence.accessModes"),
        ({"autoscaling.poseBusyPercent": "120"}, "autoscaling.poseBusyPercent"),
        ({"httpRoute.requestTimeout": "30 minutes"}, "httpRoute.requestTimeout"),
        ({"httpRoute.hostnames": "{Skelact_Example}"}, "httpRoute.hostnames"),
    ],
)
def test_schema_refuses(sets: dict[str, str], field: str) -> None:
    error = render_error(sets)
    assert "values don't meet the specifications of the schema" in error, error
    assert field in error, error


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (
            {"terminationGracePeriodSeconds": "30"},
            ["terminationGracePeriodSeconds (30)", "drain.preStopSleepSeconds", "config.shutdown_timeout_s"],
        ),
        (
            {"autoscaling.enabled": "true", "autoscaling.streamsPerPod": "8", "config.max_streams": "8"},
            ["autoscaling.streamsPerPod (8)", "config.max_streams (8)"],
        ),
        ({"autoscaling.enabled": "true", "keda.enabled": "true"}, ["autoscaling.enabled", "keda.enabled"]),
        (
            {"autoscaling.enabled": "true", "autoscaling.minReplicas": "5", "autoscaling.maxReplicas": "3"},
            ["autoscaling.minReplicas (5)", "autoscaling.maxReplicas (3)"],
        ),
        (
            {
                "replicaCount": "3",
                "persistence.enabled": "true",
                "persistence.accessModes": "{ReadWriteOnce}",
            },
            ["persistence.accessModes", "ReadWriteMany"],
        ),
        ({"ingress.enabled": "true", "ingress.tls.enabled": "true"}, ["ingress.host"]),
        ({"httpRoute.enabled": "true"}, ["httpRoute.parentRefs"]),
    ],
)
def test_render_time_checks(sets: dict[str, str], words: list[str]) -> None:
    error = render_error(sets)
    for word in words:
        assert word in error, error


# --------------------------------------------------------------------------- agreement with the service


def test_schema_config_is_the_service_settings(facts: Any) -> None:
    """values.schema.json's `config` is generated from the settings model and up to date; it
    offers every setting but the ones the chart sets itself."""
    assert ch.SCHEMA.read_text() == ch.schema_text(facts), "run: python scripts/check_helm.py schema --write"
    offered = set(ch.config_schema(facts)["properties"])
    fields = set(facts.settings_schema["properties"])
    assert offered == fields - ch.CHART_MANAGED_SETTINGS
    assert fields >= ch.CHART_MANAGED_SETTINGS


def settings_from(env: dict[str, Any], facts: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as a pod would load them from this environment."""
    for name in list(os.environ):
        if name.startswith(facts.env_prefix):
            monkeypatch.delenv(name)
    monkeypatch.chdir(REPO / "deploy")  # no .env file here
    for name, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    return facts.settings()


def test_rendered_settings_are_the_service_settings(
    values_files: tuple[str, ...], facts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SKELACT_* the chart renders names a setting (the service ignores unknown ones
    silently) and parses with the service's settings model to the value in values."""
    docs = ch.render(values_files)
    env = environment(docs)
    names = {k.removeprefix(facts.env_prefix).lower() for k in env if k.startswith(facts.env_prefix)}
    unknown = names - set(facts.settings_schema["properties"])
    assert unknown <= PLANNED_SETTINGS, f"not service settings: {sorted(unknown - PLANNED_SETTINGS)}"
    assert not PLANNED_SETTINGS & set(facts.settings_schema["properties"]), (
        "the service has these settings now: drop them from PLANNED_SETTINGS"
    )
    settings = settings_from(env, facts, monkeypatch)
    values: dict[str, Any] = {}
    for f in ("values.yaml", *values_files):
        loaded = yaml.safe_load((ch.CHART / f).read_text())
        values = {**values, **loaded, "config": {**values.get("config", {}), **loaded.get("config", {})}}
    for key, value in values["config"].items():
        assert getattr(settings, key) == value, key
    assert settings.host == "0.0.0.0" and settings.port == values["containerPort"]
    resources = values["resources"]
    assert settings.pose_workers == int(resources["limits"]["cpu"]), "one pose thread per core of the pod"


def test_numbers_and_lists_reach_the_service_as_written(
    tmp_path: Path, facts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """YAML numbers reach templates as floats: 16777216 must not become 1.6777216e+07."""
    config = {"max_frame_bytes": 16777216, "ema_alpha": 0.25, "models": ["a", "b"], "pose_max_side": None}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config, "resources": {"limits": {"cpu": "2500m"}}}))
    env = environment(ch.render((str(values),)))
    assert env["SKELACT_MAX_FRAME_BYTES"] == "16777216"
    assert "SKELACT_POSE_MAX_SIDE" not in env, "null leaves the service default"
    settings = settings_from(env, facts, monkeypatch)
    assert settings.max_frame_bytes == 16777216 and settings.ema_alpha == 0.25
    assert settings.models == ["a", "b"]
    assert settings.pose_workers == 2, "2500m of CPU: two whole cores"


def probes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    c = container(docs)
    return {kind: c[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}


@pytest.mark.parametrize("sets", [{}, KEYS], ids=["open", "api-keys"])
def test_probes_use_the_service_health_routes(sets: dict[str, str], facts: Any) -> None:
    """Readiness and start-up on /health/ready, liveness on /health/live (never on readiness: a full
    or draining pod must not be restarted), all plain HTTP GETs that need no key: the kubelet
    sends none, so with API keys on they must target open routes."""
    docs = ch.render(sets=sets)
    found = probes(docs)
    port_names = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    paths = {}
    for kind, probe in found.items():
        assert set(probe) & {"exec", "grpc", "tcpSocket"} == set(), f"{kind}: an HTTP GET probe"
        path = probe["httpGet"]["path"]
        assert probe["httpGet"]["port"] in port_names
        assert path in facts.open_routes, f"{kind} probe on {path} would get 401 without a key"
        assert path in facts.routes, f"{kind} probe: {path} is not a route of the service"
        paths[kind] = path
    assert paths == {"startup": "/health/ready", "readiness": "/health/ready", "liveness": "/health/live"}
    env = environment(docs)
    assert ("SKELACT_API_KEYS" in env) == bool(sets)


@pytest.fixture(scope="module")
def dockerfile() -> Any:
    return cd.parse_dockerfile()


def test_chart_app_version_is_the_service_version(facts: Any) -> None:
    """appVersion is the default image tag and what the pods report: the service's own version."""
    chart = yaml.safe_load((ch.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == facts.version
    assert container(ch.render())["image"] == f"skelact:{facts.version}"


def test_image_layout_is_the_dockerfile(dockerfile: Any) -> None:
    """Port, models folder and user: the chart's assumptions about the image hold for both images."""
    values = yaml.safe_load((ch.CHART / "values.yaml").read_text())
    docs = ch.render()
    for stage in ("service", "service-cpu"):
        env = cd.stage_env(dockerfile, stage)
        assert env["SKELACT_MODELS_DIR"] == environment(docs)["SKELACT_MODELS_DIR"] == "/models"
        assert int(env["SKELACT_PORT"]) == values["containerPort"]
        user = dockerfile.stage(stage).last("USER")
        assert user is not None and user.value == "{0}:{0}".format(values["podSecurityContext"]["runAsUser"])


def _quantity(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_hpa_scales_on_metrics_the_service_exports(facts: Any) -> None:
    """Each pods metric of the HPA is served by an adapter rule from a series /metrics really
    exports; the streams target is below the pod's stream capacity, the pose-load one in (0, 1]."""
    docs = ch.render(ch.VARIANTS["production"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    pods = {
        m["pods"]["metric"]["name"]: m["pods"]["target"]
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    assert set(pods) == {"skelact_active_streams", "skelact_pose_busy_ratio"}
    adapter = yaml.safe_load(ch.ADAPTER_VALUES.read_text())
    for metric in pods:
        rules = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == metric]
        assert len(rules) == 1, f"no prometheus-adapter rule serves {metric}"
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rules[0]["seriesQuery"].strip("'\""))
        assert series and series.group(0) in facts.metrics, f"/metrics exports no {series}"
        assert re.fullmatch(rules[0]["name"]["matches"], series.group(0))
        assert rules[0]["resources"]["overrides"]["pod"]["resource"] == "pod"
    streams = _quantity(pods["skelact_active_streams"]["averageValue"])
    assert 0 < streams < float(environment(docs)["SKELACT_MAX_STREAMS"])
    assert _quantity(pods["skelact_pose_busy_ratio"]["averageValue"]) == 0.8
    default = one(ch.render(sets={"autoscaling.enabled": "true"}), "HorizontalPodAutoscaler")
    assert [m["pods"]["metric"]["name"] for m in default["spec"]["metrics"]] == ["skelact_active_streams"]


def test_every_metric_the_deployment_files_name_is_exported(
    values_files: tuple[str, ...], facts: Any
) -> None:
    """Metric names in the rendered chart (HPA, KEDA), the adapter rules and the docs' Kubernetes
    section exist in /metrics: a renamed gauge cannot leave a dead autoscaler behind."""
    deployment = (REPO / "docs" / "deployment.md").read_text()
    texts = [
        ch.template(values_files).stdout,
        ch.template(values_files, {"keda.enabled": "true", "autoscaling.enabled": "false"}).stdout,
        ch.ADAPTER_VALUES.read_text(),
        deployment[deployment.index("## 10. Kubernetes") : deployment.index("## Pins")],
        (REPO / "docs" / "api.md").read_text(),
    ]
    names = {n for text in texts for n in METRIC_NAME.findall(text)}
    assert {"skelact_active_streams", "skelact_stream_capacity", "skelact_pose_busy_ratio"} <= names
    # a labelled counter's samples appear once counted: its family name is what the registry has
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}
    assert families <= facts.metrics, sorted(families - facts.metrics)


def test_scale_down_does_not_cut_streams_in_bulk() -> None:
    """Scale-down waits out short dips and removes one pod at a time; scale-up reacts at once."""
    behavior = one(ch.render(ch.VARIANTS["production"]), "HorizontalPodAutoscaler")["spec"]["behavior"]
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_draining_fits_in_the_grace_period() -> None:
    """preStop (endpoint removal reaches the ingress) + the service's SIGTERM drain fit in the
    grace period, updates never drop below the wanted ready pods, and the PDB allows one at a time."""
    docs = ch.render(ch.VARIANTS["production"])
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    sleep = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = float(environment(docs)["SKELACT_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + drain
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_ingress_follows_the_service_limits(facts: Any) -> None:
    """WebSocket timeouts longer than the service's own idle timeout (the service, not the proxy,
    decides when a quiet stream ends) and a body size above the upload limit."""
    docs = ch.render(ch.VARIANTS["production"])
    notes = one(docs, "Ingress")["metadata"]["annotations"]
    env = environment(docs)
    default_idle = facts.settings_schema["properties"]["stream_idle_timeout_s"]["default"]
    idle = float(env.get("SKELACT_STREAM_IDLE_TIMEOUT_S", default_idle))
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) > idle
    body = re.fullmatch(r"(\d+)m", notes["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body and int(body.group(1)) > float(env["SKELACT_MAX_UPLOAD_MB"])
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    backend = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(docs, "Service")
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_gpu_and_cpu_variants() -> None:
    gpu = ch.render()
    resources = container(gpu)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    tolerations = one(gpu, "Deployment")["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations

    two = ch.render(sets={"gpu.count": "2"})
    assert container(two)["resources"]["limits"]["nvidia.com/gpu"] == 2

    cpu = ch.render(ch.VARIANTS["cpu"])
    c = container(cpu)
    assert not any("gpu" in k for k in c["resources"].get("limits", {}))
    assert "tolerations" not in one(cpu, "Deployment")["spec"]["template"]["spec"]
    assert c["image"].endswith("-cpu")
    assert environment(cpu)["SKELACT_PROVIDERS"] == "cpu"


def test_api_keys_come_from_a_secret() -> None:
    made = ch.render(sets={"apiKeys.keys": "{0123456789abcdef0123}"})
    secret = one(made, "Secret")
    ref = environment(made)["SKELACT_API_KEYS"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"][ref["key"]] == "0123456789abcdef0123"

    existing = ch.render(sets=KEYS)
    assert not objects(existing, "Secret")
    assert environment(existing)["SKELACT_API_KEYS"]["secretKeyRef"] == {"name": "my-keys", "key": "api-keys"}
    assert "apiKeys.keys" in render_error({"apiKeys.keys": "{short}"}), "keys under 16 characters"


def test_shared_storage_and_models_volume() -> None:
    docs = ch.render(
        sets={"persistence.enabled": "true", "models.volume.persistentVolumeClaim.claimName": "zoo"}
    )
    c = container(docs)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert mounts["models"]["mountPath"] == "/models"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "zoo"
    shared = mounts["shared"]["mountPath"]
    claim = one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == claim
    env = environment(docs)
    dirs = {env[name] for name in ("SKELACT_RESULTS_DIR", "SKELACT_JOBS_DIR", "SKELACT_ACTION_SETS_DIR")}
    assert len(dirs) == 3 and all(d.startswith(shared + "/") for d in dirs), dirs

    existing = ch.render(sets={"persistence.enabled": "true", "persistence.existingClaim": "nfs"})
    assert not objects(existing, "PersistentVolumeClaim")


def test_custom_resources() -> None:
    """The CRD objects kubernetes-validate cannot check: their required fields and their target."""
    docs = ch.render(sets={"keda.enabled": "true", "serviceMonitor.enabled": "true"})
    assert not objects(docs, "HorizontalPodAutoscaler"), "KEDA makes its own HPA"
    deployment = one(docs, "Deployment")
    so = one(docs, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] >= 1, "streams cannot arrive at zero pods"
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert "skelact_active_streams" in trigger["metadata"]["query"]
    assert float(trigger["metadata"]["threshold"]) < float(environment(docs)["SKELACT_MAX_STREAMS"])
    assert "replicas" not in deployment["spec"]
    busy = ch.render(sets={"keda.enabled": "true", "autoscaling.poseBusyPercent": "75"})
    queries = {
        t["metadata"]["query"].split("{")[0]: t["metadata"]
        for t in one(busy, "ScaledObject")["spec"]["triggers"]
    }
    assert set(queries) == {"sum(skelact_active_streams", "sum(skelact_pose_busy_ratio"}
    assert float(queries["sum(skelact_pose_busy_ratio"]["threshold"]) == 0.75

    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    bearer = {"serviceMonitor.enabled": "true", "serviceMonitor.authorization.type": "Bearer"}
    secret = {
        "serviceMonitor.authorization.credentials.name": "k",
        "serviceMonitor.authorization.credentials.key": "key",
    }
    (endpoint,) = one(ch.render(sets={**bearer, **secret}), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "k", "key": "key"}}


def test_gateway_api_route(facts: Any) -> None:
    """The HTTPRoute (Gateway API v1; a CRD kubernetes-validate cannot check): attached to the
    named Gateway, to the chart's Service and port; WS /stream without a request timeout, the rest
    with one longer than the service's own (a long synchronous clip must not be cut by the proxy)."""
    docs = ch.render(ch.VARIANTS["production+gateway"])
    assert not objects(docs, "Ingress")
    route = one(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
    assert spec["hostnames"] == ["skelact.example.com"]
    assert set(spec) == {"parentRefs", "hostnames", "rules"}
    service = one(docs, "Service")
    port = service["spec"]["ports"][0]["port"]
    by_path = {}
    for rule in spec["rules"]:
        assert set(rule) == {"matches", "backendRefs", "timeouts"}
        assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": port}]
        (match,) = rule["matches"]
        assert match["path"]["type"] == "PathPrefix"
        by_path[match["path"]["value"]] = rule["timeouts"]
    assert by_path["/stream"] == {"request": "0s"}, "an upgraded stream lasts as long as it sends"
    timeout = re.fullmatch(r"(\d+)(h|m|s)", by_path["/"]["request"])
    assert timeout, by_path["/"]
    seconds = int(timeout.group(1)) * {"h": 3600, "m": 60, "s": 1}[timeout.group(2)]
    assert seconds > facts.settings_schema["properties"]["request_timeout_s"]["default"]


def test_config_change_rolls_the_pods() -> None:
    def checksum(docs: list[dict[str, Any]]) -> str:
        value: str = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum(ch.render()) != checksum(ch.render(sets={"config.max_streams": "8"}))
