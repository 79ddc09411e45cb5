"""Run-level Airflow semantics in standalone mode, read from the workflow history.

Capacity goes to the highest ``priority_weight`` first (and each try carries it as Temporal's priority
key); ``max_active_tis_per_dagrun`` holds a task to its limit; the DAG's success and failure callbacks
run once, on an activity worker, with Airflow's context; ``dagrun_timeout`` fails the run on a durable
timer and stops its running task.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from conftest import TEST_DAGS, DagRunner, assert_healthy, events, states
from temporal_airflow.models import RUN_DAG_CALLBACK_ACTIVITY, AssetUpdate

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DAGS = TEST_DAGS / "semantics.py"
ASSET_PAIR = Path(__file__).parent / "conformance_dags" / "asset_pair.py"
DEADLINE_DAG = Path(__file__).parent / "deep_dags" / "deep_deadline.py"


def _scheduled(history: WorkflowHistory) -> list:
    scheduled = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    return [e.activity_task_scheduled_event_attributes for e in scheduled]


def _marker() -> Path:
    return Path(tempfile.mkdtemp(prefix="semantics-")) / "callbacks.txt"


async def test_capacity_goes_to_the_highest_priority_weight_first(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(DAGS, dag_id="priority_order")
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert states(result) == {"low": "success", "mid": "success", "high": "success"}
    history = await handle.fetch_history()
    assert_healthy(history)
    tries = [a for a in _scheduled(history) if a.activity_type.name == "run_airflow_task"]
    assert [a.activity_id for a in tries] == ["high#try1", "mid#try1", "low#try1"]  # not alphabetical
    assert [a.priority.priority_key for a in tries] == [1, 3, 5]


async def test_max_active_tis_per_dagrun_runs_one_index_at_a_time(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(DAGS, dag_id="per_run_limit")
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success"
    history = await handle.fetch_history()
    assert_healthy(history)
    running: set[int] = set()
    most = 0
    limited: set[int] = set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_id.startswith("one_at_a_time["):
                limited.add(event.event_id)
                running.add(event.event_id)
                most = max(most, len(running))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            running.discard(event.activity_task_completed_event_attributes.scheduled_event_id)
    assert len(limited) == 3 and most == 1


async def test_dag_callbacks_run_once_with_airflows_context(dag_runner: DagRunner) -> None:
    marker = _marker()
    handle = await dag_runner.start(DAGS, dag_id="callbacks", conf={"marker": str(marker)})
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success"
    history = await handle.fetch_history()
    assert_healthy(history)
    assert [a.activity_type.name for a in _scheduled(history)].count(RUN_DAG_CALLBACK_ACTIVITY) == 1
    assert marker.read_text().splitlines() == [f"success {result.run_id} last"]


async def test_dagrun_timeout_fails_the_run_and_stops_its_task(dag_runner: DagRunner) -> None:
    marker = _marker()
    handle = await dag_runner.start(DAGS, dag_id="run_timeout", conf={"marker": str(marker)})
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.state == "failed"
    assert states(result) == {"slow": "skipped", "after": "skipped"}  # as Airflow's scheduler leaves them
    assert result.end_date is not None and result.start_date is not None
    assert (result.end_date - result.start_date).total_seconds() < 60
    history = await handle.fetch_history()
    assert_healthy(history)
    assert events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED), "the running try is cancelled"
    assert marker.read_text().splitlines() == [f"timed_out {result.run_id} slow"]


async def test_standalone_result_lists_the_assets_its_tasks_updated(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(ASSET_PAIR, dag_id="asset_producer")
    assert result.state == "success"
    uri = "file:///tmp/temporal-airflow-conformance/report.csv"
    assert result.asset_updates == [AssetUpdate(uri=uri, name=uri, task_id="write_report")]


async def test_a_dag_with_a_deadline_alert_runs(dag_runner: DagRunner) -> None:
    """Deadline alerts are Airflow scheduler business (deep mode); standalone runs such a DAG unchanged."""
    handle = await dag_runner.start(DEADLINE_DAG)
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert states(result) == {"work": "success"}
    assert_healthy(await handle.fetch_history())
