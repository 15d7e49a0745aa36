"""Offline checks of the Helm chart deploy/helm/skelact (no cluster, no network).

    python scripts/check_helm.py check              # helm lint + template of every values file,
                                                    # kubernetes-validate --strict on several versions
    python scripts/check_helm.py schema             # is the schema's `config` the service's settings?
    python scripts/check_helm.py schema --write     # regenerate it (after changing service settings)

helm comes from ``scripts/setup.sh dev`` (``.tools/helm``), kubernetes-validate from requirements/dev.txt.
tests/deploy/test_helm.py runs the same functions and checks the rendered objects against the service.

``values.schema.json`` is written by hand except ``properties.config``: one property per service
setting, generated from the service's settings model, so helm refuses an unknown or mistyped setting
and the chart never carries a second list of names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "skelact"
SCHEMA = CHART / "values.schema.json"
ADAPTER_VALUES = REPO / "deploy" / "helm" / "prometheus-adapter-values.yaml"
HELM = REPO / ".tools" / "helm"
# Values files a user is told to install with (docs/deployment.md), by name.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "cpu": ("values-cpu.yaml",),
    "production": ("values-production.yaml",),
    "cpu+production": ("values-cpu.yaml", "values-production.yaml"),
    "production+gateway": ("values-production.yaml", "values-gateway.yaml"),
}
# Kubernetes versions the chart is validated against: the oldest still in common managed support
# and a current one; kubernetes-validate ships the schemas of 1.25 to its own version.
KUBE_VERSIONS = ("1.30.0", "1.32.0")
# Settings the chart sets itself (Deployment env), so they are not offered under `config`.
CHART_MANAGED_SETTINGS = frozenset(
    {"host", "port", "models_dir", "api_keys", "results_dir", "jobs_dir", "action_sets_dir"}
)


# --------------------------------------------------------------------------- the service's side


@dataclass(frozen=True)
class ServiceFacts:
    """What the chart must agree with, read from the service itself."""

    settings: type[Any]  # the settings model (pydantic-settings): validates rendered values
    settings_schema: dict[str, Any]  # its JSON schema
    env_prefix: str  # SKELACT_
    version: str  # the app's version (the chart's appVersion)
    routes: frozenset[str]  # GET paths of the app's OpenAPI schema (what probes may call)
    open_routes: frozenset[str]  # those that answer without an API key (kubelet probes send none)
    metrics: frozenset[str]  # metric family and sample names of /metrics


def service_facts() -> ServiceFacts:
    """The one place that imports the service (its modules may move: change only this)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from service.app import create_app
    from service.core.config import Settings
    from service.core.security import is_open
    from service.metrics import Metrics

    app = create_app(Settings())
    routes = frozenset(p for p, ops in app.openapi()["paths"].items() if "get" in ops)
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return ServiceFacts(
        settings=Settings,
        settings_schema=Settings.model_json_schema(),
        env_prefix=str(Settings.model_config.get("env_prefix", "")),
        version=app.version,
        routes=routes,
        open_routes=frozenset(p for p in routes if is_open(p)),
        metrics=frozenset(names),
    )


# --------------------------------------------------------------------------- values.schema.json


def _setting_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A pydantic property schema as a values.schema.json one: lists may also be written `a,b`,
    machine-specific defaults and pydantic's titles/formats are left out."""
    variants = prop.get("anyOf", [prop])
    out_variants = []
    for v in variants:
        v = {
            k: val
            for k, val in v.items()
            if k not in ("title", "default", "format", "writeOnly", "description")
        }
        out_variants.append(v)
        if v.get("type") == "array":
            out_variants.append({"type": "string"})
    body: dict[str, Any] = out_variants[0] if len(out_variants) == 1 else {"anyOf": out_variants}
    if "description" in prop:
        body = {"description": prop["description"], **body}
    return body


def config_schema(facts: ServiceFacts) -> dict[str, Any]:
    props = facts.settings_schema["properties"]
    return {
        "type": "object",
        "description": "Service settings (service/settings.py), rendered into a ConfigMap as "
        f"{facts.env_prefix}<NAME>; generated by scripts/check_helm.py schema --write",
        "additionalProperties": False,
        "properties": {
            name: _setting_schema(prop)
            for name, prop in sorted(props.items())
            if name not in CHART_MANAGED_SETTINGS
        },
    }


def schema_text(facts: ServiceFacts, current: dict[str, Any] | None = None) -> str:
    """values.schema.json with its `config` property regenerated (the rest kept as written)."""
    schema = current if current is not None else json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = config_schema(facts)
    return json.dumps(schema, indent=2) + "\n"


# --------------------------------------------------------------------------- helm


def helm_binary() -> Path:
    if HELM.is_file():
        return HELM
    found = shutil.which("helm")
    if found is None:
        raise FileNotFoundError(f"helm not found at {HELM} or on PATH: run scripts/setup.sh dev")
    return Path(found)


def helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run helm with a private, empty configuration (no repositories, no cluster)."""
    home = REPO / ".tools" / "helm-home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": os.devnull,
    }
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def values_args(files: tuple[str, ...] = (), sets: dict[str, str] | None = None) -> list[str]:
    args = []
    for f in files:
        path = Path(f) if Path(f).is_absolute() else CHART / f
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def lint(files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return helm("lint", "--strict", str(CHART), *values_args(files))


def template(
    files: tuple[str, ...] = (),
    sets: dict[str, str] | None = None,
    kube_version: str = KUBE_VERSIONS[-1],
    release: str = "skelact",
    namespace: str = "vision",
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        kube_version,
        *values_args(files, sets),
    )


def render(
    files: tuple[str, ...] = (), sets: dict[str, str] | None = None, **kw: Any
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (raises with helm's message on failure)."""
    import yaml

    proc = template(files, sets, **kw)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.strip() or proc.stdout.strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def kubernetes_validate(
    manifest: str, versions: tuple[str, ...] = KUBE_VERSIONS
) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` (schemas shipped in its wheel) on rendered YAML: exit 0 and
    only WARN lines (kinds it has no schema for: CRDs) when every object is valid."""
    exe = Path(sys.executable).parent / "kubernetes-validate"
    cmd = [str(exe) if exe.is_file() else "kubernetes-validate", "--strict", "--quiet"]
    for v in versions:
        cmd += ["-k", v]
    # a file, not stdin: the tool reads its input once per version and closes stdin after the first
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(manifest)
        f.flush()
        return subprocess.run([*cmd, f.name], capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------- CLI


def all_problems() -> list[str]:
    problems = []
    for name, files in VARIANTS.items():
        result = lint(files)
        if result.returncode != 0:
            problems.append(f"helm lint ({name}):\n{result.stdout}{result.stderr}")
        for kube in KUBE_VERSIONS:
            rendered = template(files, kube_version=kube)
            if rendered.returncode != 0:
                problems.append(f"helm template ({name}, {kube}): {rendered.stderr.strip()}")
                continue
            checked = kubernetes_validate(rendered.stdout, (kube,))
            errors = [line for line in checked.stdout.splitlines() if not line.startswith("WARN")]
            if checked.returncode != 0 or errors:
                problems.append(f"kubernetes-validate ({name}, {kube}):\n" + "\n".join(errors))
    if SCHEMA.read_text() != schema_text(service_facts()):
        problems.append(f"{SCHEMA.relative_to(REPO)}: config is not the service's settings: schema --write")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="lint, render and validate the chart")
    schema = sub.add_parser("schema", help="check (or --write) the generated part of values.schema.json")
    schema.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "schema":
        text = schema_text(service_facts())
        if args.write:
            SCHEMA.write_text(text)
            print(f"wrote {SCHEMA.relative_to(REPO)}")
            return 0
        problems = [] if SCHEMA.read_text() == text else ["config differs from the service's settings"]
    else:
        problems = all_problems()
    for problem in problems:
        print(f"- {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
