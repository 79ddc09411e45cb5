"""What an Airflow user relies on beyond the examples: bad input, secrets, limits, timeouts, mapping."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from conftest import SERVICE_PASSWORD, TEST_DAGS, DagRunner, states
from temporal_airflow.models import DAG_IMPORT_ERROR, DAG_NOT_FOUND_ERROR, INVALID_CONF_ERROR

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _failure(dag_runner: DagRunner, dag_file: Path | str, **fields: object) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as info:
        await dag_runner.run(dag_file, **fields)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def test_dag_file_that_does_not_import_fails_without_retry(dag_runner: DagRunner) -> None:
    error = await _failure(dag_runner, TEST_DAGS / "broken_import.py")
    assert error.type == DAG_IMPORT_ERROR
    assert error.non_retryable
    assert "broken_import.py" in error.message and "this_module_does_not_exist" in error.message


async def test_missing_dag_file_is_reported(dag_runner: DagRunner) -> None:
    error = await _failure(dag_runner, TEST_DAGS / "no_such_file.py")
    assert error.type == DAG_IMPORT_ERROR and "no_such_file.py" in error.message


async def test_unknown_dag_id_names_the_dags_found(dag_runner: DagRunner) -> None:
    error = await _failure(dag_runner, TEST_DAGS / "two_dags.py", dag_id="third_dag")
    assert error.type == DAG_NOT_FOUND_ERROR
    assert "first_dag" in error.message and "second_dag" in error.message


async def test_file_with_several_dags_needs_a_dag_id(dag_runner: DagRunner) -> None:
    error = await _failure(dag_runner, TEST_DAGS / "two_dags.py")
    assert error.type == DAG_NOT_FOUND_ERROR
    result = await dag_runner.run(TEST_DAGS / "two_dags.py", dag_id="second_dag")
    assert result.dag_id == "second_dag" and result.state == "success"


async def test_conf_rejected_by_params_schema_fails_clearly(dag_runner: DagRunner) -> None:
    error = await _failure(dag_runner, TEST_DAGS / "params_check.py", conf={"count": "not a number"})
    assert error.type == INVALID_CONF_ERROR and error.non_retryable
    assert "count" in error.message


async def test_conf_overrides_params(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(TEST_DAGS / "params_check.py", conf={"count": 21})
    assert json.loads(result.tasks[0].xcoms[0].value_json) == 42


async def test_variables_from_input_do_not_leak_between_concurrent_runs(dag_runner: DagRunner) -> None:
    runs = await asyncio.gather(
        *(dag_runner.run(TEST_DAGS / "secrets_and_vars.py", variables={"greeting": f"hi-{i}"}) for i in range(3))
    )
    for i, result in enumerate(runs):
        values = {t.task_id: json.loads(t.xcoms[0].value_json) for t in result.tasks}
        assert values["read_variable"] == f"hi-{i}"
        assert values["read_connection"] == f"svc.internal:8443:robot:{len(SERVICE_PASSWORD)}"


async def test_connection_password_never_enters_workflow_history(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(TEST_DAGS / "secrets_and_vars.py", variables={"greeting": "x"})
    result = await handle.result()
    assert result.state == "success"
    history = await handle.fetch_history()
    assert SERVICE_PASSWORD not in history.to_json()


async def test_max_active_tasks_is_honoured(dag_runner: DagRunner) -> None:
    marker = tempfile.mktemp(prefix="slow-tasks-")
    result = await dag_runner.run(TEST_DAGS / "slow_tasks.py", conf={"marker": marker, "seconds": 1.5})
    assert result.state == "success"
    events = sorted(
        (float(ts), kind) for kind, _name, _pid, ts in (line.split() for line in Path(marker).read_text().splitlines())
    )
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2  # the DAG's max_active_tasks; four tasks were ready at once


async def test_task_longer_than_heartbeat_timeout_runs_once(dag_runner: DagRunner) -> None:
    marker = tempfile.mktemp(prefix="heartbeat-")
    result = await dag_runner.run(
        TEST_DAGS / "slow_tasks.py", conf={"marker": marker, "seconds": 6}, task_heartbeat_timeout_seconds=2
    )
    assert result.state == "success"
    starts = [line for line in Path(marker).read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 4  # four tasks, each started exactly once
    assert all(t.try_number == 1 for t in result.tasks)


async def test_execution_timeout_fails_the_task(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(TEST_DAGS / "timeout_task.py")
    task = result.tasks[0]
    assert (result.state, task.state) == ("failed", "failed")
    assert task.error is not None and "Timeout" in task.error


async def test_dynamic_task_mapping_expands_and_collects(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(TEST_DAGS / "mapped.py")
    assert states(result) == {
        "numbers": "success",
        "double[0]": "success",
        "double[1]": "success",
        "double[2]": "success",
        "total": "success",
    }
    total = next(t for t in result.tasks if t.task_id == "total")
    assert json.loads(total.xcoms[0].value_json) == 12
