"""The Airflow attributes the activity worker's and the orchestrator's compat doors choose by.

Each supported release line has the branches its doors are expected to take; an installed Airflow this
test does not know fails it, so a new Airflow release is looked at (and its branches written down here)
before the supported range in :mod:`temporal_airflow.models.airflow_support` grows to include it. No
service needed: only the installed Airflow is imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest

from temporal_airflow.activities import airflow_compat as activities_compat
from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion
from temporal_airflow.orchestrator import airflow_compat as orchestrator_compat


@dataclass(frozen=True)
class Branches:
    """What the doors find on one Airflow release line."""

    http: str
    passes_client: bool
    task_map_table: bool
    names_attempts: bool


KNOWN: dict[tuple[int, int], Branches] = {
    (3, 2): Branches(http="httpx", passes_client=False, task_map_table=True, names_attempts=False),
    (3, 3): Branches(http="httpx", passes_client=True, task_map_table=True, names_attempts=False),
    (3, 4): Branches(http="httpx2", passes_client=True, task_map_table=False, names_attempts=True),
}
#: Attributes of :data:`activities_compat.TOUCHED` a release line does not have (the door's other branch).
ABSENT_WHERE = {("airflow.models.taskmap", "TaskMap"): lambda branches: not branches.task_map_table}


@pytest.fixture(scope="module")
def branches() -> Branches:
    line = activities_compat.check()
    if line not in KNOWN:
        pytest.fail(f"Airflow {line[0]}.{line[1]} is supported but unknown to this test: add its branches to KNOWN")
    return KNOWN[line]


def test_the_known_lines_are_the_supported_range() -> None:
    from temporal_airflow.models.airflow_support import FIRST_UNSUPPORTED, OLDEST_SUPPORTED

    assert sorted(KNOWN) == [(3, minor) for minor in range(OLDEST_SUPPORTED[1], FIRST_UNSUPPORTED[1])]


def test_activities_door_takes_the_expected_branches(branches: Branches) -> None:
    assert activities_compat.sdk_http().__name__ == branches.http
    assert activities_compat.passes_client() is branches.passes_client
    assert activities_compat.has_task_map_table() is branches.task_map_table
    assert activities_compat.names_attempts() is branches.names_attempts


@pytest.mark.parametrize(
    ("module", "attribute"),
    [(module, attribute) for module, names in activities_compat.TOUCHED.items() for attribute in names]
    + [(module, attribute) for module, names in orchestrator_compat.TOUCHED.items() for attribute in names],
)
def test_touched_attributes_exist(branches: Branches, module: str, attribute: str) -> None:
    absent = ABSENT_WHERE.get((module, attribute), lambda _: False)(branches)
    try:
        found = hasattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError:
        found = False
    assert found is not absent, f"{module}.{attribute} {'present' if found else 'missing'}"


def test_the_client_reaches_the_runner_on_every_line() -> None:
    """The 3.2 branch (a supervisor whose ``_api_client`` hook answers our client) builds on every line."""
    client = object()
    assert activities_compat._answering_with(client)._api_client(None) is client


def test_orchestrator_seam_fits(branches: Branches) -> None:
    assert orchestrator_compat.check() in KNOWN


def test_an_unknown_airflow_fails_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import airflow

    from temporal_airflow.activities import worker

    monkeypatch.setattr(airflow, "__version__", "3.1.7")
    with pytest.raises(UnsupportedAirflowVersion, match=r"supports Airflow 3\.2, 3\.3 and 3\.4.*found Airflow 3\.1\.7"):
        activities_compat.check()
    with pytest.raises(orchestrator_compat.SeamUnavailable, match=r"found Airflow 3\.1\.7"):
        orchestrator_compat.check()
    assert worker.main([]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "3.1.7" in error
