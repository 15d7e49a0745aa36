"""The import rules between the top-level packages (docs/architecture.md), read from the source
with ``ast``: every import counts, also those inside functions and ``TYPE_CHECKING`` blocks."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from skeleton.paths import REPO_ROOT

# package -> the packages it may import (what is not listed is forbidden)
ALLOWED: dict[str, frozenset[str]] = {
    "skeleton": frozenset(),
    "perception": frozenset({"skeleton"}),
    "models": frozenset({"skeleton", "perception"}),
    "training": frozenset({"skeleton", "perception", "models"}),
    "service": frozenset({"skeleton", "perception"}),
    "export": frozenset({"skeleton", "perception", "models", "training", "service"}),
    "evaluation": frozenset({"skeleton", "perception", "models", "training", "service"}),
    "bench": frozenset({"skeleton", "perception", "models", "training", "export", "service"}),
}
# third-party packages a layer must not import: the service image has no torch, and perception
# is the stage code both training and the service run, so it stays free of either one's stack
FORBIDDEN_LIBRARIES: dict[str, frozenset[str]] = {
    "skeleton": frozenset({"torch", "fastapi", "starlette", "uvicorn"}),
    "perception": frozenset({"torch", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings"}),
    "service": frozenset({"torch"}),
}
MAX_ROUTE_LINES = 250


def imported_roots(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, top-level name) of every import in a module of ``package`` (relative ones resolve
    inside the package)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, package
            elif node.module:
                yield node.lineno, node.module.split(".")[0]


def package_imports(root: Path) -> dict[str, dict[str, list[str]]]:
    """package -> imported top-level name -> the places (``file:line``) that import it."""
    out: dict[str, dict[str, list[str]]] = {}
    for package in ALLOWED:
        found: dict[str, list[str]] = {}
        for path in sorted((root / package).rglob("*.py")):
            for line, name in imported_roots(path, package):
                found.setdefault(name, []).append(f"{path.relative_to(root)}:{line}")
        out[package] = found
    return out


def violations(imports: dict[str, dict[str, list[str]]]) -> list[str]:
    """Imports the rules forbid: a package not in ALLOWED, or a library in FORBIDDEN_LIBRARIES."""
    problems = []
    for package, found in imports.items():
        for name, places in sorted(found.items()):
            if name in ALLOWED and name != package and name not in ALLOWED[package]:
                problems.append(f"{package} may not import {name}: {', '.join(places)}")
            if name in FORBIDDEN_LIBRARIES.get(package, ()):
                problems.append(f"{package} may not import the library {name}: {', '.join(places)}")
    return problems


def cycle(imports: dict[str, dict[str, list[str]]]) -> list[str]:
    """A cycle among the packages' import edges (empty: none)."""
    edges = {p: {n for n in found if n in ALLOWED and n != p} for p, found in imports.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for nxt in sorted(edges[node]):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(edges):
        found = visit(start, [])
        if found:
            return found
    return []


def test_packages_import_only_what_their_layer_allows() -> None:
    imports = package_imports(REPO_ROOT)
    assert not violations(imports), "\n".join(violations(imports))
    assert cycle(imports) == []
    # the rules are not vacuous: the layers do use what they may
    assert "perception" in imports["training"] and "perception" in imports["service"]
    assert "service" in imports["evaluation"] and "training" in imports["evaluation"]


def test_the_rules_catch_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "perception" / "bad.py").write_text("def f():\n    from service.core import config\n")
    (tmp_path / "service" / "ok.py").write_text("from perception import bad\nfrom . import ok\n")
    (tmp_path / "skeleton" / "lib.py").write_text("import torch\n")
    imports = package_imports(tmp_path)
    found = sorted(violations(imports))
    assert len(found) == 2, found
    assert found[0].startswith("perception may not import service: perception/bad.py:2")
    assert found[1].startswith("skeleton may not import the library torch: skeleton/lib.py:1")
    assert cycle(imports) == ["perception", "service", "perception"]


@pytest.mark.parametrize("route", sorted((REPO_ROOT / "service" / "api").glob("*.py")), ids=lambda p: p.name)
def test_routes_stay_thin(route: Path) -> None:
    """Routes receive, validate, send and close; the work lives in the packages below them."""
    lines = len(route.read_text().splitlines())
    assert lines <= MAX_ROUTE_LINES, f"{route.name}: {lines} lines"
