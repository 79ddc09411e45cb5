"""Deferrable tasks and reschedule-mode sensors without a triggerer: durable timers and trigger activities.

Every test reads the workflow history: pokes are one activity each, waits between them are workflow
timers of the sensor's own interval, time triggers are timers too, other triggers run in an activity,
and no workflow task ever fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from test_engine import own_stack

from conftest import TEST_DAGS, DagRunner, assert_healthy, executions, record_history, states
from temporal_airflow.models import DagExecutionResult, RunProgress

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PROBE = TEST_DAGS / "deferral_probe.py"


def _counter() -> str:
    return tempfile.mktemp(prefix="deferral-counter-")


def _pokes(counter: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    if Path(counter).exists():
        for line in Path(counter).read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def _scheduled(history: WorkflowHistory, activity_id: str) -> list:
    return [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_id == activity_id
    ]


def _timers(history: WorkflowHistory) -> list[float]:
    """Durations of every timer the run started, in seconds."""
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


def _at(event) -> datetime:
    return event.event_time.ToDatetime()


async def _result(handle: WorkflowHandle) -> DagExecutionResult:
    result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=180)
    return result


async def test_reschedule_sensor_pokes_on_durable_timers(dag_runner: DagRunner) -> None:
    counter = _counter()
    handle = await dag_runner.start(PROBE, dag_id="reschedule_sensor", conf={"counter": counter, "pokes": 3})
    result = await _result(handle)
    assert states(result) == {"wait": "success"}
    assert result.tasks[0].try_number == 1, "pokes are not tries"
    assert _pokes(counter) == {"wait": 3}
    history = await handle.fetch_history()
    assert_healthy(history)
    pokes = _scheduled(history, "wait#try1")
    assert len(pokes) == 3, "one activity per poke"
    gaps = [(_at(b) - _at(a)).total_seconds() for a, b in itertools.pairwise(pokes)]
    assert all(1.9 <= gap <= 5 for gap in gaps), gaps  # poke_interval=2 s
    waits = [t for t in _timers(history) if 1.0 <= t <= 2.1]
    assert len(waits) == 2, _timers(history)  # the waits between pokes are workflow timers
    record_history("reschedule_sensor", history)


async def test_reschedule_sensor_timeout_and_soft_fail(dag_runner: DagRunner) -> None:
    counter = _counter()
    handle = await dag_runner.start(PROBE, dag_id="sensor_timeouts", conf={"counter": counter})
    result = await _result(handle)
    assert states(result) == {"soft_fails": "skipped", "times_out": "failed"}
    by_id = {t.task_id: t for t in result.tasks}
    assert by_id["times_out"].try_number == 1, "a sensor timeout is not retried"
    assert "AirflowSensorTimeout" in (by_id["times_out"].error or ""), by_id["times_out"].error
    # timeout=4 s counted from the first poke, poke_interval=1 s: a handful of pokes, never hundreds.
    assert all(3 <= n <= 8 for n in _pokes(counter).values()), _pokes(counter)
    for task in result.tasks:
        assert task.start_date is not None and task.end_date is not None
    assert_healthy(await handle.fetch_history())


async def test_time_trigger_is_a_workflow_timer(dag_runner: DagRunner) -> None:
    handle = await dag_runner.start(PROBE, dag_id="time_deferral")
    result = await _result(handle)
    assert states(result) == {"after": "success", "sleep": "success"}
    assert {t.task_id: t.try_number for t in result.tasks} == {"after": 1, "sleep": 1}
    history = await handle.fetch_history()
    assert_healthy(history)
    tries = _scheduled(history, "sleep#try1")
    assert len(tries) == 2, "the try that defers, then the same try resumed"
    assert not _scheduled(history, "sleep#try1:trigger"), "a time trigger needs no activity"
    # delta=6 s from the run's data interval end: the timer waits what is left of it when the task defers.
    assert any(1.0 <= t <= 6.1 for t in _timers(history)), _timers(history)
    waited = (_at(tries[1]) - _at(tries[0])).total_seconds()
    assert 1.0 <= waited <= 10, waited
    record_history("time_deferral", history)


async def _wait_for_state(handle: WorkflowHandle, task_id: str, state: str) -> None:
    for _ in range(300):
        progress: RunProgress = await handle.query("progress", result_type=RunProgress)
        if any(t.task_id == task_id and t.state == state for t in progress.tasks):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{task_id} never became {state}")


async def test_custom_trigger_runs_in_an_activity_and_resumes_with_its_event(dag_runner: DagRunner) -> None:
    path = Path(tempfile.mkdtemp(prefix="deferral-")) / "ready.txt"
    handle = await dag_runner.start(PROBE, dag_id="custom_trigger", conf={"path": str(path)})
    await _wait_for_state(handle, "wait_for_file", "deferred")
    path.write_text("hello from the trigger")
    result = await _result(handle)
    assert states(result) == {"wait_for_file": "success"}
    task = result.tasks[0]
    assert task.try_number == 1
    assert json.loads(task.xcoms[0].value_json) == {"content": "hello from the trigger", "asked_at_try": 1}
    history = await handle.fetch_history()
    assert_healthy(history)
    assert len(_scheduled(history, "wait_for_file#try1")) == 2
    assert len(_scheduled(history, "wait_for_file#try1:trigger")) == 1
    record_history("custom_trigger", history)


async def test_trigger_timeout_fails_the_task(dag_runner: DagRunner) -> None:
    path = Path(tempfile.mkdtemp(prefix="deferral-")) / "never.txt"
    handle = await dag_runner.start(PROBE, dag_id="trigger_timeouts", conf={"path": str(path)})
    result = await _result(handle)
    assert states(result) == {"timer_times_out": "failed", "trigger_times_out": "failed"}
    for task in result.tasks:
        assert "TaskDeferralTimeout" in (task.error or "") and "Trigger timeout" in (task.error or ""), task.error
    history = await handle.fetch_history()
    assert_healthy(history)
    assert any(1.5 <= t <= 2.1 for t in _timers(history)), "the time trigger's timeout is a timer"
    assert len(_scheduled(history, "trigger_times_out#try1:trigger")) == 1
    record_history("trigger_timeouts", history)


async def test_waiting_sensor_and_deferred_task_survive_continue_as_new(workers: None) -> None:
    counter = _counter()
    async with own_stack(dynamic_config={"limit.historyCount.suggestContinueAsNew": "60"}) as stack:
        handle = await stack.runner.start(
            PROBE, dag_id="long_wait", conf={"counter": counter, "pokes": 14}, run_id=f"wait-{uuid.uuid4().hex[:6]}"
        )
        result = await _result(handle)
        runs = await executions(stack.client, handle)
    assert states(result) == {"poker": "success", "sleeper": "success"}
    assert len(runs) >= 2, "14 pokes must continue as new with a 60-event suggestion"
    assert _pokes(counter) == {"poker": 14}, "every poke ran once, none was lost or repeated"
    sleeper_tries = 0
    for history in runs:
        assert_healthy(history)
        assert len(history.events) < 200
        sleeper_tries += len(_scheduled(history, "sleeper#try1"))
    assert sleeper_tries == 2, "the deferred task deferred once and resumed once, across executions"
    record_history("long_wait_continued", runs[0])
    record_history("long_wait_resumed", runs[-1])
    assert all(t.try_number == 1 for t in result.tasks)
