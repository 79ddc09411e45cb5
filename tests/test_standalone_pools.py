"""Standalone pools: runs share a configured pool through its pool workflow, and never leak a slot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError

from conftest import TEST_DAGS, DagRunner, Queues, assert_healthy, executions, record_history
from temporal_airflow.activities.standalone_pool_activities import configured_pools
from temporal_airflow.models import (
    POOL_STATE_QUERY,
    POOL_WORKFLOW,
    POOLS_ENV,
    PoolState,
    pool_workflow_id,
    service_task_queue,
    task_limit_pool,
)

pytestmark = pytest.mark.integration

DAGS = TEST_DAGS / "standalone_pools.py"
POOLS = "standalone_one=1,standalone_cancelled=1,standalone_terminated=1,standalone_continued=1"


@pytest.fixture(autouse=True)
def pools_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activity workers of the session run in this process: they read the sizes at each acquisition."""
    monkeypatch.setenv(POOLS_ENV, POOLS)


def holds(log: Path) -> list[tuple[float, str]]:
    """(time, start|end) of every try that wrote to ``log``, in time order."""
    marks = [(float(at), what) for what, at, _ in (line.split() for line in log.read_text().splitlines())]
    return sorted(marks)


async def pool_state(client: Client, pool: str) -> PoolState:
    return await client.get_workflow_handle(pool_workflow_id(pool)).query(POOL_STATE_QUERY, result_type=PoolState)


async def started(log: Path) -> None:
    """Wait until a try has written its ``start`` line."""
    for _ in range(240):
        if log.exists() and "start" in log.read_text():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"no try started ({log})")


async def start_pool(client: Client, queues: Queues, pool: str, check_every_seconds: float) -> WorkflowHandle:
    """Start a pool's workflow ahead of its first acquisition, to check its holders more often."""
    return await client.start_workflow(
        POOL_WORKFLOW,
        PoolState(pool, service_task_queue(queues.activities), check_every_seconds=check_every_seconds),
        id=pool_workflow_id(pool),
        task_queue=queues.workflows,
    )


async def run_while_another_is_stopped(
    dag_runner: DagRunner, dag_id: str, tmp_path: Path, stop: str
) -> tuple[WorkflowHandle, list[tuple[float, str]]]:
    """A long try holds the pool's only slot; a second run waits for it; the first run is stopped (``cancel``
    or ``terminate``): the second run's try gets the slot and succeeds. Returns the stopped run and the
    second run's holds."""
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = await dag_runner.start(DAGS, dag_id=dag_id, conf={"log": str(first_log), "seconds": 600})
    await started(first_log)
    second = await dag_runner.start(DAGS, dag_id=dag_id, conf={"log": str(second_log)})
    await asyncio.sleep(3)
    assert not second_log.exists(), "the second run's try started while the first held the slot"
    await getattr(first, stop)()
    result = await asyncio.wait_for(second.result(), timeout=120)
    assert result.state == "success", [(t.task_id, t.state, t.error) for t in result.tasks]
    assert_healthy(await second.fetch_history())
    return first, holds(second_log)


async def two_runs_take_turns(dag_runner: DagRunner, dag_id: str, tmp_path: Path, tries: int) -> WorkflowHistory:
    """Two concurrent runs of ``dag_id`` succeed with healthy histories, their ``tries`` tries never
    overlapping; returns the last run's history."""
    log = tmp_path / "holds.log"
    handles = [await dag_runner.start(DAGS, dag_id=dag_id, conf={"log": str(log), "seconds": 1}) for _ in range(2)]
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=300)
    assert [r.state for r in results] == ["success", "success"], [r.tasks for r in results]
    assert [what for _, what in holds(log)] == ["start", "end"] * tries, holds(log)  # one at a time, across runs
    for handle in handles:
        history = await handle.fetch_history()
        assert_healthy(history)
    return history


async def test_runs_share_a_pool_and_never_overlap_in_it(dag_runner: DagRunner, client: Client, tmp_path: Path) -> None:
    """Two runs, two tries each, one slot: the tries take turns, and the pool holds nothing afterwards."""
    history = await two_runs_take_turns(dag_runner, "pool_one_slot", tmp_path, tries=4)
    state = await pool_state(client, "standalone_one")
    assert state.holders == [] and state.size == 1
    record_history("standalone_pool", history)
    assert_healthy(await client.get_workflow_handle(pool_workflow_id("standalone_one")).fetch_history())


async def test_max_active_tis_per_dag_holds_across_runs(dag_runner: DagRunner, client: Client, tmp_path: Path) -> None:
    """A task with ``max_active_tis_per_dag=1`` in ``default_pool``: two runs' tries take turns."""
    history = await two_runs_take_turns(dag_runner, "pool_task_limit", tmp_path, tries=2)
    state = await pool_state(client, task_limit_pool("pool_task_limit", "hold"))
    assert state.holders == [] and state.size == 1
    record_history("standalone_task_limit", history)


async def test_a_resized_pool_applies_at_the_next_acquisition(
    dag_runner: DagRunner, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POOLS_ENV, "standalone_one=2")
    log = tmp_path / "holds.log"
    result = await dag_runner.run(DAGS, dag_id="pool_one_slot", conf={"log": str(log), "seconds": 3})
    assert result.state == "success"
    assert [what for _, what in holds(log)] == ["start", "start", "end", "end"], holds(log)  # both at once
    assert (await pool_state(client, "standalone_one")).size == 2


def test_pool_sizes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POOLS_ENV, " etl = 4, db=1,, ")
    assert configured_pools() == {"etl": 4, "db": 1}
    monkeypatch.setenv(POOLS_ENV, "etl=four")
    with pytest.raises(ApplicationError, match="'etl=four' is not name=slots") as raised:
        configured_pools()
    assert raised.value.non_retryable


async def test_a_cancelled_run_gives_its_slot_back(dag_runner: DagRunner, client: Client, tmp_path: Path) -> None:
    cancelled, _ = await run_while_another_is_stopped(dag_runner, "pool_cancelled", tmp_path, "cancel")
    with pytest.raises(WorkflowFailureError):
        await cancelled.result()
    assert_healthy(await cancelled.fetch_history())
    assert (await pool_state(client, "standalone_cancelled")).holders == []


async def test_a_terminated_runs_slot_is_released_by_the_pool(
    dag_runner: DagRunner, client: Client, queues: Queues, tmp_path: Path
) -> None:
    """A terminated run cannot give its slot back: the pool finds its run closed and releases it."""
    pool = await start_pool(client, queues, "standalone_terminated", check_every_seconds=1)
    _, second_holds = await run_while_another_is_stopped(dag_runner, "pool_terminated", tmp_path, "terminate")
    assert [what for _, what in second_holds] == ["start", "end"]
    assert (await pool_state(client, "standalone_terminated")).holders == []
    history = await pool.fetch_history()
    assert_healthy(history)
    record_history("pool_workflow", history)


async def test_a_pool_continues_as_new_with_its_holders(
    dag_runner: DagRunner, client: Client, queues: Queues, tmp_path: Path
) -> None:
    """Checked often, the pool's history fills up: its next execution keeps the slot a running try holds,
    and that try's release reaches it."""
    pool = await start_pool(client, queues, "standalone_continued", check_every_seconds=0.1)
    log = tmp_path / "holds.log"
    run = await dag_runner.start(DAGS, dag_id="pool_continued", conf={"log": str(log), "seconds": 600})
    await started(log)
    latest = client.get_workflow_handle(pool.id)
    for _ in range(240):
        if (await latest.describe()).run_id != pool.result_run_id:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the pool workflow did not continue as new")
    assert [h.workflow_id for h in (await pool_state(client, "standalone_continued")).holders] == [run.id]
    await run.cancel()
    with pytest.raises(WorkflowFailureError):
        await run.result()
    assert_healthy(await run.fetch_history())
    assert (await pool_state(client, "standalone_continued")).holders == []
    histories = await executions(client, pool)
    assert len(histories) >= 2
    for history in histories:
        assert_healthy(history)
    record_history("pool_workflow_continued", histories[0])


async def test_a_pool_that_cannot_admit_the_try_fails_it_with_the_reason(dag_runner: DagRunner) -> None:
    handles = [await dag_runner.start(DAGS, dag_id=dag_id) for dag_id in ("pool_too_small", "pool_not_configured")]
    reasons = [
        "2 slot(s) of pool 'standalone_one', which has 1 slots",
        f"pool 'standalone_nowhere', which is not configured (set {POOLS_ENV}",
    ]
    for handle, reason in zip(handles, reasons, strict=True):
        result = await handle.result()
        assert result.state == "failed"
        (task,) = result.tasks
        assert task.state == "failed" and reason in (task.error or ""), task.error
        assert_healthy(await handle.fetch_history())
