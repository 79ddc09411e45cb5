"""The engine under real workloads: retries on durable timers, dead task processes, big XComs, long runs.

Every test reads the workflow history, not only the result: no workflow task may ever fail, retries
wait Airflow's delay on a timer, big values stay out of history, and long runs continue as new.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import airflow
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import DataConverter

from conftest import (
    EXAMPLES,
    TEST_DAGS,
    DagRunner,
    Queues,
    assert_healthy,
    events,
    executions,
    record_history,
    states,
)
from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.models import RUN_TASK_ACTIVITY as RUN_TASK
from temporal_airflow.models import DagExecutionResult
from temporal_airflow.models.airflow_support import release_line
from temporal_airflow.models.converter import data_converter
from temporal_airflow.workflows.worker import create_workflow_worker

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PROBE = TEST_DAGS / "engine_probe.py"


def _counter() -> str:
    return tempfile.mktemp(prefix="engine-counter-")


def _runs(counter: str) -> dict[str, int]:
    """How many times each task body ran (one line per run in the counter file)."""
    counts: dict[str, int] = {}
    if Path(counter).exists():
        for line in Path(counter).read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def _timestamp(event) -> datetime:
    return event.event_time.ToDatetime()


async def test_retry_waits_retry_delay_on_a_timer_without_failing_a_workflow_task(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(EXAMPLES / "flaky_retry.py")
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    assert states(result) == {"flaky": "success", "report": "success"}
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("flaky_retry", history)
    completed = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    scheduled = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    tries = [e for e in scheduled if "flaky" in e.activity_task_scheduled_event_attributes.activity_id]
    assert [e.activity_task_scheduled_event_attributes.activity_id for e in tries] == ["flaky#try1", "flaky#try2"]
    first_done = next(
        e for e in completed if e.activity_task_completed_event_attributes.scheduled_event_id == tries[0].event_id
    )
    waited = (_timestamp(tries[1]) - _timestamp(first_done)).total_seconds()
    assert 1.9 <= waited <= 6, waited  # retry_delay=2s, on a durable timer
    assert events(history, EventType.EVENT_TYPE_TIMER_STARTED), "the retry delay is a workflow timer"


@pytest.mark.skipif(release_line(airflow.__version__) < (3, 3), reason="a task's retry_policy is new in Airflow 3.3")
async def test_retry_policy_delay_is_honoured(dag_runner: DagRunner) -> None:
    counter = _counter()
    handle = await dag_runner.start(PROBE, dag_id="retry_policy_probe", conf={"counter": counter})
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    assert states(result) == {"flaky": "success"}
    assert result.tasks[0].try_number == 2 and _runs(counter) == {"flaky": 2}
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("retry_policy", history)
    scheduled = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    completed = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    first_done, second = completed[-2], scheduled[-1]
    waited = (_timestamp(second) - _timestamp(first_done)).total_seconds()
    assert 2.9 <= waited <= 8, waited  # the policy's 3 s, not the task's 10 min retry_delay


async def test_dead_task_process_is_one_failed_try(dag_runner: DagRunner) -> None:
    counter = _counter()
    handle = await dag_runner.start(PROBE, dag_id="process_dies", conf={"counter": counter})
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "failed"
    assert states(result) == {"dies_no_retry": "failed", "dies_with_retries": "failed"}
    # os._exit(1) is one failed Airflow try: retries=0 runs once, retries=2 three times. Never more.
    assert _runs(counter) == {"dies_no_retry": 1, "dies_with_retries": 3}
    by_id = {t.task_id: t for t in result.tasks}
    assert by_id["dies_with_retries"].try_number == 3
    error = by_id["dies_no_retry"].error or ""
    assert "exited with code 1" in error and "TaskProcessDied" in error
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("process_dies", history)


async def test_branching_needs_no_idle_timer(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(EXAMPLES / "branching.py")
    await handle.result()
    history = await handle.fetch_history()
    assert_healthy(history)
    assert not events(history, EventType.EVENT_TYPE_TIMER_STARTED), "skip-only turns must not wait on a timer"


async def test_big_xcoms_travel_by_reference(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(PROBE, dag_id="big_xcoms")
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success", [(t.task_id, t.error) for t in result.tasks]
    assert {t.task_id: t.state for t in result.tasks} == {
        **{f"part_{i}": "success" for i in range(5)},
        "combine": "success",
        "huge": "success",
    }
    combine = next(t for t in result.tasks if t.task_id == "combine")
    assert json.loads(combine.xcoms[0].value_json) == 5 * 450 * 1024
    huge = next(t for t in result.tasks if t.task_id == "huge")
    assert huge.xcoms[0].value_ref is not None and huge.xcoms[0].value_json == ""
    history = await handle.fetch_history()
    assert_healthy(history)
    assert len(history.to_json()) < 200_000, "XCom values must not enter workflow history"


@dataclass
class Stack:
    """A Temporal dev server of its own, with workers and a runner, for tests that change its settings."""

    server: DevServer
    client: Client
    runner: DagRunner


@asynccontextmanager
async def own_stack(
    converter: Callable[[], DataConverter] = data_converter, dynamic_config: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    with DevServer(dynamic_config=dynamic_config or {}) as server:
        client = await Client.connect(server.address, data_converter=converter())
        queues = Queues()
        async with (
            create_workflow_worker(client, task_queue=queues.workflows),
            create_activity_worker(client, task_queue=queues.activities, max_concurrent=4),
            create_service_worker(client, task_queue=queues.activities),
        ):
            yield Stack(server, client, DagRunner(client, queues))


async def test_without_payload_store_oversized_xcoms_fail_their_tasks_clearly(workers: None) -> None:
    async with own_stack(converter=DataConverter) as stack:
        handle = await stack.runner.start(PROBE, dag_id="big_xcoms")
        result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
        assert_healthy(await handle.fetch_history())
    by_id = {t.task_id: t for t in result.tasks}
    assert result.state == "failed"
    # The 3 MB value is over what one try may keep inline; the 5 x 450 KB fan-in over what an input may carry.
    for task_id, limit in (("huge", "524288 bytes"), ("combine", "1572864 bytes")):
        task = by_id[task_id]
        assert (task.state, task.try_number) == ("failed", 1), task_id
        assert task.error is not None and "XComTooLarge" in task.error and limit in task.error, task.error


async def test_long_run_continues_as_new_and_runs_every_task_once(workers: None) -> None:
    counter = _counter()
    async with own_stack(dynamic_config={"limit.historyCount.suggestContinueAsNew": "120"}) as stack:
        handle = await stack.runner.start(
            PROBE, dag_id="long_chain", conf={"counter": counter}, run_id=f"chain-{uuid.uuid4().hex[:6]}"
        )
        result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
        runs = await executions(stack.client, handle)
    assert result.state == "success", [(t.task_id, t.state, t.error) for t in result.tasks if t.state != "success"]
    assert len(runs) >= 3, "a 40-task chain must continue as new with a 120-event suggestion"
    for history in runs:
        assert_healthy(history)
        assert len(history.events) < 400
    record_history("long_chain_continued", runs[0])
    record_history("long_chain_resumed", runs[-1])
    assert _runs(counter) == {f"step_{i:03d}": 1 for i in range(40)}
    by_key = {(t.task_id, t.map_index): t for t in result.tasks}
    assert json.loads(by_key[("total", -1)].xcoms[0].value_json) == 42 + 40
    assert all(t.try_number == 1 for t in result.tasks if t.task_id.startswith("step_"))
    assert result.run_id.startswith("chain-")


async def test_a_run_whose_replay_would_be_long_continues_as_new(dag_runner: DagRunner) -> None:
    # 42 task instances, a budget of 420 evaluated per execution: about ten turns each, far below the
    # shared server's event suggestion (300 events), so only the replay budget ends an execution.
    counter = _counter()
    handle = await dag_runner.start(PROBE, dag_id="long_chain", conf={"counter": counter}, replay_budget=420)
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    runs = await executions(dag_runner.client, handle)
    assert result.state == "success", [(t.task_id, t.state, t.error) for t in result.tasks if t.state != "success"]
    assert len(runs) >= 3, "a 40-task chain must continue as new with a budget of ten turns"
    for history in runs[:-1]:
        assert_healthy(history)
        scheduled = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        tries = [e for e in scheduled if e.activity_task_scheduled_event_attributes.activity_type.name == RUN_TASK]
        # About ten turns, a few tries each where the DAG fans out; without the budget an execution would
        # run ~40 tries before the server's 300-event suggestion.
        assert 1 <= len(tries) <= 20, f"an execution ran {len(tries)} tries on a budget of about ten turns"
        assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert_healthy(runs[-1])
    record_history("replay_budget_continued", runs[0])
    assert _runs(counter) == {f"step_{i:03d}": 1 for i in range(40)}


async def test_cancelled_run_stops_its_task_and_fails_the_rest(dag_runner: DagRunner) -> None:
    marker = _counter()
    handle = await dag_runner.start(TEST_DAGS / "crash_probe.py", conf={"marker": marker, "seconds": 60})
    for _ in range(240):  # the task's body has started
        if Path(marker).exists() and Path(marker).read_text().startswith("start"):
            break
        await asyncio.sleep(0.5)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout=120)
    history = await handle.fetch_history()
    assert_healthy(history)
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED
    # The try learns of the cancellation at its next heartbeat (every second), not at the SDK's default
    # throttle (80% of the heartbeat timeout), and its process is stopped at once.
    requested = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED)[0]
    stopped = next(
        e
        for e in history.events
        if e.event_id > requested.event_id
        and e.event_type in (EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
    )
    assert stopped.event_time.ToDatetime() - requested.event_time.ToDatetime() < timedelta(seconds=10)
    record_history("cancelled", history)


async def test_mapping_over_a_mapped_tasks_outputs(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(PROBE, dag_id="second_order_mapping")
    assert states(result) == {
        "numbers": "success",
        **{f"double[{i}]": "success" for i in range(3)},
        **{f"plus_one[{i}]": "success" for i in range(3)},
        "total": "success",
    }
    total = next(t for t in result.tasks if t.task_id == "total")
    assert json.loads(total.xcoms[0].value_json) == 15


async def test_a_fan_out_past_max_map_length_fails_its_producer_as_airflow_does(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(PROBE, dag_id="too_wide_fanout")
    by_id = {t.task_id: t for t in result.tasks}
    assert result.state == "failed"
    assert by_id["indexes"].state == "failed"
    assert by_id["indexes"].error is not None and "too large to map" in by_id["indexes"].error
    assert all(t.state == "upstream_failed" for t in result.tasks if t.task_id == "work")


async def test_wide_fanout_expands_in_batches_and_survives_continue_as_new(workers: None) -> None:
    counter = _counter()
    settings = {"limit.historyCount.suggestContinueAsNew": "400"}
    async with own_stack(dynamic_config=settings) as stack:
        handle = await stack.runner.start(PROBE, dag_id="wide_fanout", conf={"counter": counter})
        result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=900)
        runs = await executions(stack.client, handle)
    assert result.state == "success"
    assert len(runs) >= 2, "400 indexes make the run continue as new at least once"
    for history in runs:
        assert_healthy(history)
    # Every index ran exactly once across executions; the reducer saw all 400 values.
    assert _runs(counter) == {f"work_{i}": 1 for i in range(400)}
    total = next(t for t in result.tasks if t.task_id == "total")
    assert json.loads(total.xcoms[0].value_json) == sum(range(400))
    loading = [
        e
        for history in runs
        for e in events(history, EventType.EVENT_TYPE_TIMER_STARTED)
        if e.user_metadata.summary.data and b"loading task instances" in e.user_metadata.summary.data
    ]
    assert loading, "rows beyond one activation's batch are created and loaded on short timers"
