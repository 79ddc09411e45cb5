"""The workflows package's door to Airflow (``airflow_compat``): what it patches, on which Airflow, and
that the run's version-dependent paths (mapped lengths, big expansions, a run carried into a new
execution) work on the installed release.

No Temporal server and no activity worker: a :class:`LocalDagRun` is driven turn by turn here, its
tries' outcomes made up, so this module runs on every supported Airflow even where other packages do
not (it imports nothing from ``conftest``).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="temporal-airflow-test-home-"))

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import airflow
import pytest
from temporalio.client import Client

from temporal_airflow.models import TaskExecutionResult, XComEntry
from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, release_line
from temporal_airflow.workflows import airflow_compat, bulk_rows
from temporal_airflow.workflows.values import TaskKey

_CLOCK = ("airflow._shared.timezones.timezone.utcnow", "airflow.sdk._shared.timezones.timezone.utcnow")
_ROWS = "airflow.models.dagrun.DagRun._create_task_instances"
_SEAMS = (
    "airflow.models.dagrun.DagRun.get_task_instances (per run)",
    "airflow.models.dagrun.DagRun._get_ready_tis (per run)",
)
#: What the door patches, per release line it has been checked against. A new release line fails here
#: until someone has read what changed in Airflow's internals and added it.
PATCHED = {
    (3, 2): (*_CLOCK, _ROWS, "airflow.models.taskmap.TaskMap.expand_mapped_task", *_SEAMS),
    (3, 3): (*_CLOCK, _ROWS, "airflow.models.taskmap.TaskMap.expand_mapped_task", *_SEAMS),
    (3, 4): (*_CLOCK, _ROWS, "airflow.models.taskinstance.TaskInstance.expand_mapped_task", *_SEAMS),
}
START = datetime(2024, 1, 1, tzinfo=UTC)


def _resolve(dotted: str) -> Any:
    """The object a dotted name names: its longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part)
        return found
    raise LookupError(dotted)


def test_the_door_patches_what_this_release_line_is_known_to_need() -> None:
    line = release_line(airflow.__version__)
    assert line in PATCHED, f"Airflow {airflow.__version__}: a release line the workflows' door was never checked on"
    assert airflow_compat.patched_attributes() == PATCHED[line]


def test_every_patch_is_in_place_once() -> None:
    airflow_compat.install()
    airflow_compat.install()
    for dotted in airflow_compat.patched_attributes():
        if dotted.endswith("(per run)"):
            continue
        patched = _resolve(dotted)
        if dotted in _CLOCK:
            assert patched.__code__.co_names == ("_temporal_airflow_now",), dotted
            continue
        func = getattr(patched, "__func__", patched)
        assert hasattr(func, "__wrapped__") and not hasattr(func.__wrapped__, "__wrapped__"), dotted


@pytest.mark.parametrize("version", ["3.1.7", "3.5.0", "4.0.0"])
def test_an_unsupported_airflow_fails_at_start_with_one_line(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    from temporal_airflow.workflows.worker import create_workflow_worker

    monkeypatch.setattr(airflow, "__version__", version)
    monkeypatch.setattr(airflow_compat, "_installed", None)
    for start in (airflow_compat.install, lambda: create_workflow_worker(cast(Client, object()))):
        with pytest.raises(UnsupportedAirflowVersion) as info:
            start()
        message = str(info.value)
        assert "\n" not in message and f"found Airflow {version}" in message and "3.2, 3.3 and 3.4" in message


def test_a_patched_method_whose_signature_moved_is_refused_before_anything_is_patched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.models.dagrun import DagRun

    def moved(self: Any, dag_id: str, tasks: Any, *, session: Any) -> None:
        return None

    monkeypatch.setattr(DagRun, "_create_task_instances", moved)
    monkeypatch.setattr(airflow_compat, "_installed", None)
    with pytest.raises(UnsupportedAirflowVersion, match=r"DagRun\._create_task_instances has no parameter"):
        airflow_compat.install()
    assert DagRun._create_task_instances is moved


def test_a_release_line_that_disagrees_with_its_features_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = release_line(airflow.__version__)
    monkeypatch.setattr(airflow, "__version__", "3.3.9" if line >= (3, 4) else "3.4.9")
    with pytest.raises(UnsupportedAirflowVersion, match="unlike its release line"):
        airflow_compat.task_map_in_xcom()


# -- the version-dependent paths of a run, driven turn by turn -----------------------------------------


def _fan_out_dag(width: int) -> dict[str, Any]:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, task
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("fan_out", schedule=None, start_date=START) as dag:

        @task
        def make() -> list[int]:
            return list(range(width))

        @task
        def double(x: int) -> int:
            return 2 * x

        @task
        def again(x: int) -> int:
            return x

        @task
        def total(xs: Any) -> int:
            return sum(xs)

        doubled = double.expand(x=make())
        total(again.expand(x=doubled)) >> EmptyOperator(task_id="done")
    return cast(dict[str, Any], DagSerialization.to_dict(dag))


def _outcome(key: TaskKey, try_number: int, when: datetime, width: int) -> TaskExecutionResult:
    """A successful try that returned what the DAG's task would: a list to map over, or one value."""
    if key.task_id == "make":
        xcoms = [XComEntry("make", "return_value", "[]", mapped_length=width)]
    else:
        xcoms = [XComEntry(key.task_id, "return_value", "1", map_index=key.map_index)]
    return TaskExecutionResult(key.task_id, "success", try_number, when, when, map_index=key.map_index, xcoms=xcoms)


def _turns(local: Any, width: int, stop_after: str | None = None) -> Iterator[TaskKey]:
    """Run the DAG's turns; yield each task instance as it succeeds (stop once ``stop_after`` ran)."""
    when = START
    for _ in range(200):
        while local.catching_up:
            local.catch_up()
        turn = local.ready_tasks(64)
        for ready in turn.ready:
            when += timedelta(seconds=1)
            local.mark_running(ready.key, when)
            local.record_result(_outcome(ready.key, ready.try_number, when, width))
            yield ready.key
        if local.finished or (stop_after and stop_after in {r.key.task_id for r in turn.ready}):
            return
        assert turn.ready or turn.progressed or local.catching_up, "a turn that neither started nor changed"


def _new_run(serialized: dict[str, Any]) -> Any:
    from temporal_airflow.workflows.local_run import LocalDagRun

    return LocalDagRun(serialized, run_id="r", run_type="manual", logical_date=START, run_after=START, conf={})


@pytest.mark.parametrize("width", [3, bulk_rows.ROWS_PER_ACTIVATION + 20])
def test_a_fan_out_and_a_map_over_its_outputs_expand_to_every_index(width: int) -> None:
    local = _new_run(_fan_out_dag(width))
    ran = list(_turns(local, width))
    assert local.state == "success"
    for task_id in ("double", "again"):
        assert sorted(k.map_index for k in ran if k.task_id == task_id) == list(range(width))
    assert {k.task_id for k in ran} == {"make", "double", "again", "total"}
    local.dispose()


def test_a_run_carried_into_a_new_execution_keeps_its_mapped_outputs() -> None:
    from temporal_airflow.workflows.local_run import resume_local_run

    width = 5
    serialized = _fan_out_dag(width)
    first = _new_run(serialized)
    ran = list(_turns(first, width, stop_after="double"))
    assert {k.task_id for k in ran} == {"make", "double"}
    xcoms = {
        key: [XComEntry(key.task_id, "return_value", "[]", map_index=key.map_index, mapped_length=width)]
        if key.task_id == "make"
        else [XComEntry(key.task_id, "return_value", "1", map_index=key.map_index)]
        for key in ran
    }
    carried = first.summaries(xcoms, {})
    second = resume_local_run(first.run_context(), serialized, carried)
    first.dispose()
    rest = list(_turns(second, width))
    assert second.state == "success"
    assert sorted(k.map_index for k in rest if k.task_id == "again") == list(range(width))
    assert not {k.task_id for k in rest} & {"make", "double"}
    second.dispose()


def test_a_run_past_its_dagrun_timeout_fails_and_asks_for_its_failure_callback() -> None:
    from airflow.sdk import DAG, task
    from airflow.serialization.serialized_objects import DagSerialization

    def on_failure(context: Any) -> None:
        return None

    with DAG(
        "timing_out",
        schedule=None,
        start_date=START,
        dagrun_timeout=timedelta(minutes=1),
        on_failure_callback=on_failure,
    ) as dag:

        @task
        def slow() -> None:
            return None

        slow()
    local = _new_run(cast(dict[str, Any], DagSerialization.to_dict(dag)))
    ready = local.ready_tasks(4).ready
    local.mark_running(ready[0].key, START)
    assert local.timeout_at is not None
    local.time_out(local.timeout_at)
    assert local.state == "failed" and local.callback_request is not None
    assert "timed_out" in local.callback_request
    local.dispose()


def test_a_retried_and_a_cleared_task_run_their_next_try_numbers() -> None:
    from airflow.sdk import DAG, task
    from airflow.serialization.serialized_objects import DagSerialization

    with DAG("retrying", schedule=None, start_date=START) as dag:

        @task(retries=1, retry_delay=timedelta(seconds=1))
        def flaky() -> None:
            return None

        flaky()
    local = _new_run(cast(dict[str, Any], DagSerialization.to_dict(dag)))
    tries = []
    for state in ("up_for_retry", "success"):
        (ready,) = local.ready_tasks(4).ready
        tries.append(ready.try_number)
        local.mark_running(ready.key, START)
        local.record_result(TaskExecutionResult("flaky", state, ready.try_number, START, START))
    assert tries == [1, 2]
    key = TaskKey("flaky")
    assert local.states()[key] == ("success", 2)
    assert local.set_state(key, None, START)
    (ready,) = local.ready_tasks(4).ready
    assert ready.try_number == 3 and ready.max_tries == 3
    local.dispose()
