"""Each package's pyproject extra declares what the package imports, and only that; every
declared requirement is pinned in constraints.txt.

Each image installs the base dependencies and one extra (Dockerfile), so an import served only
by another extra's package works in the dev venv and fails in the image.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
FIRST_PARTY = {"reconciler", "sidecar", "server", "contracts"}
PACKAGES = ("reconciler", "sidecar", "server")
"""Each with the extra of its name; ``contracts`` is shared and counted in every package that
imports one of its modules."""

RUN_TIME_ONLY = {
    "reconciler": {"boto3": "MLflow's S3 artifact repository imports it for s3:// sources"},
    "sidecar": {"boto3": "MLflow's S3 artifact repository imports it for s3:// sources"},
    "server": {
        "uvicorn-worker": "gunicorn loads uvicorn_worker.UvicornWorker by name "
        "(SERVER_WORKER_CLASS)",
        "uvicorn": "the UvicornWorker's server",
    },
}
"""Requirements a package needs without importing them itself, and why."""


def _requirements(specs: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(spec).name) for spec in specs}


def _imported(path: Path) -> Iterator[str]:
    """Top-level names of every absolute import in ``path`` (nested and lazy ones included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def third_party_imports(package: str) -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for ``package`` and the ``contracts``
    modules it reaches."""
    found: dict[str, set[str]] = {}
    files = sorted((REPO / package).rglob("*.py"))
    seen: set[Path] = set()
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            top = name.partition(".")[0]
            if top == "contracts":
                module = REPO.joinpath(*name.split(".")).with_suffix(".py")
                files.extend([module] if module.is_file() else [])
            elif top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


@cache
def distributions_of(module: str) -> frozenset[str]:
    """The installed distributions providing top-level ``module`` (mlflow: mlflow-skinny...)."""
    return frozenset(canonicalize_name(name) for name in _installed().get(module, []))


@cache
def _installed() -> dict[str, list[str]]:
    return dict(packages_distributions())


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_is_declared_in_the_packages_extra(package: str) -> None:
    declared = _requirements(PROJECT["dependencies"] + PROJECT["optional-dependencies"][package])
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports(package).items()
        if not distributions_of(module) & declared
    }
    assert not undeclared, (
        f"{package} imports these without declaring them in pyproject's `{package}` extra "
        f"(module: files): {undeclared}"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_requirement_of_the_extra_is_imported_or_says_why(package: str) -> None:
    imported = set().union(*(distributions_of(m) for m in third_party_imports(package)))
    needed_anyway = set(RUN_TIME_ONLY[package])
    unused = _requirements(PROJECT["optional-dependencies"][package]) - imported - needed_anyway
    assert not unused, (
        f"pyproject's `{package}` extra declares {sorted(unused)}, which {package} never imports: "
        "remove it, or say in RUN_TIME_ONLY why the package needs it"
    )
    assert needed_anyway.isdisjoint(imported), "RUN_TIME_ONLY lists what is imported anyway"


def test_base_dependencies_are_imported_by_every_package() -> None:
    for package in PACKAGES:
        imported = set().union(*(distributions_of(m) for m in third_party_imports(package)))
        missing = _requirements(PROJECT["dependencies"]) - imported
        assert not missing, f"{package} does not import {sorted(missing)}: move it to the extras"


def test_every_declared_requirement_is_pinned_in_constraints() -> None:
    pinned = {
        canonicalize_name(line.partition("==")[0])
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    declared = _requirements(PROJECT["dependencies"]).union(
        *(_requirements(specs) for specs in PROJECT["optional-dependencies"].values())
    ) - {canonicalize_name(PROJECT["name"])}
    assert declared <= pinned, f"not pinned in constraints.txt: {sorted(declared - pinned)}"
