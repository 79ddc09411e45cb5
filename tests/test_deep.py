"""Deep integration against a real Airflow deployment: PostgreSQL (pgserver), `airflow api-server`,
Airflow's own migrations and DAG serialization, a real Temporal dev server and workers.

Everything a user sees is checked through Airflow's REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import airflow
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from conftest import EXAMPLES, ROOT, Queues, airflow_dag_test, assert_healthy, executions, record_history
from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.local_stack import LocalStack
from temporal_airflow.models import (
    DAG_NOT_FOUND_ERROR,
    DEEP_WORKFLOW,
    DagExecutionResult,
    DeepDagExecutionInput,
    RunProgress,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("deep"),
    pytest.mark.asyncio(loop_scope="session"),
]

DEEP_DAGS = ROOT / "tests" / "deep_dags"
AIRFLOW_EXAMPLES = Path(airflow.__file__).parent / "example_dags"
NESTED_BRANCH = "example_nested_branch_dag.py"
SERVICE_PASSWORD = "deep-pa55-w0rd-not-for-history"


@pytest.fixture(scope="module")
def stack(temporal_server: DevServer, queues: Queues) -> Iterator[LocalStack]:
    """Postgres + migrated Airflow DB + serialized DAGs + api-server + an activity worker process."""
    workdir = Path(tempfile.mkdtemp(prefix="deep-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    for source in [*DEEP_DAGS.glob("*.py"), EXAMPLES / "trigger_rules.py", AIRFLOW_EXAMPLES / NESTED_BRANCH]:
        shutil.copy(source, dags / source.name)
    stack = LocalStack(workdir, dags)
    stack.temporal = temporal_server  # share the session's Temporal server and workflow worker
    try:
        from temporal_airflow.cli.local_postgres import LocalPostgres

        (workdir / "logs").mkdir()
        stack.airflow_home.mkdir()
        stack.postgres = LocalPostgres(workdir / "postgres").start()
        stack.airflow("db", "migrate")
        stack.airflow("dags", "reserialize")
        stack.airflow(
            "connections", "add", "deep_service", "--conn-type", "http", "--conn-host", "api.example.internal",
            "--conn-port", "8443", "--conn-login", "svc", "--conn-password", SERVICE_PASSWORD,
        )  # fmt: skip
        stack.start_api_server()
        stack.start_activity_worker(f"{queues.activities}-deep")
        yield stack
    finally:
        stack.temporal = None  # owned by the session fixture
        stack.stop()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> AirflowRest:
    return AirflowRest(stack.api_url)


async def start_deep(client: Client, queues: Queues, dag_id: str, **fields: Any) -> WorkflowHandle:
    return await client.start_workflow(
        DEEP_WORKFLOW,
        DeepDagExecutionInput(dag_id=dag_id, activity_task_queue=f"{queues.activities}-deep", **fields),
        id=f"deep-{dag_id}-{uuid.uuid4().hex[:8]}",
        task_queue=queues.workflows,
        result_type=DagExecutionResult,
    )


async def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _run_id_from(api: AirflowRest, dag_id: str) -> str | None:
    runs = api.request("GET", f"dags/{dag_id}/dagRuns?order_by=-start_date&limit=1")["dag_runs"]
    return runs[0]["dag_run_id"] if runs else None


async def test_ui_sees_the_run_live_then_final_states_and_xcoms(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    handle = await start_deep(client, queues, "deep_progress", conf={"seconds": 8})
    run_id = await wait_until(lambda: _run_id_from(api, "deep_progress"), 120, "the DagRun to appear")

    def slow_running() -> dict | None:
        tis = api.task_instances("deep_progress", run_id)
        return tis if tis.get("slow", {}).get("state") == "running" else None

    live = await wait_until(slow_running, 120, "task `slow` to be running")
    assert api.run("deep_progress", run_id)["state"] == "running"
    assert live["extract"]["state"] == "success"
    assert live["slow"]["try_number"] == 1 and live["slow"]["start_date"] is not None
    assert live["finish"]["state"] is None

    result = await handle.result()
    assert result.state == "success" and result.run_id == run_id
    final = api.task_instances("deep_progress", run_id)
    assert {t: ti["state"] for t, ti in final.items()} == {"extract": "success", "slow": "success", "finish": "success"}
    assert api.run("deep_progress", run_id)["state"] == "success"
    assert api.xcom("deep_progress", run_id, "extract") == {"rows": 3, "source": "db"}
    assert api.xcom("deep_progress", run_id, "slow") == 30
    record_history("deep_progress", await handle.fetch_history())
    assert api.xcom("deep_progress", run_id, "finish") == "30 from db"


async def test_final_states_in_airflow_match_dag_test(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, reference_home: str
) -> None:
    handle = await start_deep(client, queues, "example_trigger_rules")
    # dag.test() in its subprocess meanwhile, off the event loop where this session's workers run.
    result, reference = await asyncio.gather(
        handle.result(), asyncio.to_thread(airflow_dag_test, reference_home, EXAMPLES / "trigger_rules.py", None)
    )
    in_airflow = {t: ti["state"] for t, ti in api.task_instances("example_trigger_rules", result.run_id).items()}
    assert in_airflow == reference["tasks"]
    assert api.run("example_trigger_rules", result.run_id)["state"] == reference["state"] == result.state


async def test_task_reads_connection_and_variable_from_airflow_db(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    api.request("POST", "variables", {"key": "deep_greeting", "value": "hello"})
    handle = await start_deep(client, queues, "deep_secrets")
    result = await handle.result()
    assert result.state == "success"
    expected = f"hello svc@api.example.internal:8443 (password length {len(SERVICE_PASSWORD)})"
    assert api.xcom("deep_secrets", result.run_id, "describe_service") == expected
    # The password was read by the task from Airflow's DB: it never travelled through Temporal.
    history = await handle.fetch_history()
    assert SERVICE_PASSWORD not in history.to_json()


async def test_unknown_dag_fails_clearly_without_retrying(
    client: Client, queues: Queues, workflow_worker: None, stack: LocalStack
) -> None:
    with pytest.raises(WorkflowFailureError) as info:
        await (await start_deep(client, queues, "no_such_dag")).result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == DAG_NOT_FOUND_ERROR
    assert "no_such_dag" in cause.message


async def test_run_survives_a_database_outage(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, stack: LocalStack
) -> None:
    handle = await start_deep(client, queues, "deep_progress", conf={"seconds": 12})
    run_id = await wait_until(
        lambda: _run_id_from(api, "deep_progress") if _newest_is_running(api) else None,
        120,
        "a running deep_progress run",
    )
    await wait_until(
        lambda: api.task_instances("deep_progress", run_id)["slow"]["state"] == "running",
        120,
        "task `slow` to be running",
    )
    assert stack.postgres is not None
    stack.postgres.stop()  # the api-server, the task and the sync activities all lose the DB
    await asyncio.sleep(8)
    stack.postgres.start()
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success"
    await wait_until(lambda: api.run("deep_progress", run_id)["state"] == "success", 60, "the DB to converge")
    in_airflow = {t: ti["state"] for t, ti in api.task_instances("deep_progress", run_id).items()}
    assert (
        in_airflow
        == {t.task_id: t.state for t in result.tasks}
        == {
            "extract": "success",
            "slow": "success",
            "finish": "success",
        }
    )
    assert api.xcom("deep_progress", run_id, "finish") == "30 from db"


def _newest_is_running(api: AirflowRest) -> bool:
    runs = api.request("GET", "dags/deep_progress/dagRuns?order_by=-start_date&limit=1")["dag_runs"]
    return bool(runs) and runs[0]["state"] == "running"


async def test_long_run_continues_as_new_and_airflow_sees_every_task_once(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    handle = await start_deep(client, queues, "deep_long_chain")
    result = await asyncio.wait_for(handle.result(), timeout=600)
    assert result.state == "success"
    runs = await executions(client, handle)
    assert len(runs) >= 2, "the session server suggests continue-as-new after 300 events"
    for history in runs:
        assert_healthy(history)
    record_history("deep_long_chain_continued", runs[0])
    record_history("deep_long_chain_resumed", runs[-1])
    in_airflow = api.task_instances("deep_long_chain", result.run_id)
    assert {t: (ti["state"], ti["try_number"]) for t, ti in in_airflow.items()} == {
        f"step_{i:02d}": ("success", 1) for i in range(30)
    }
    assert api.run("deep_long_chain", result.run_id)["state"] == "success"
    assert api.xcom("deep_long_chain", result.run_id, "step_29") == 30


async def test_nested_branches_propagate_skips_without_idle_timers(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    handle = await start_deep(client, queues, "example_nested_branch_dag")
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success"
    history = await handle.fetch_history()
    assert_healthy(history)
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert not timers, "a turn that only propagates skips is followed at once, never by a timer"
    in_airflow = {t: ti["state"] for t, ti in api.task_instances("example_nested_branch_dag", result.run_id).items()}
    assert in_airflow == {t.task_id: t.state for t in result.tasks}


async def test_a_deferred_task_shows_deferred_in_airflow_while_its_trigger_waits(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    handle = await start_deep(client, queues, "deep_deferred")
    seen = await _states_seen_in_airflow(api, handle, "deep_deferred", ["wait"])
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert result.state == "success", [(t.task_id, t.state, t.error) for t in result.tasks]
    assert "deferred" in seen["wait"], seen  # as under Airflow's own triggerer
    assert api.task_instances("deep_deferred", result.run_id)["wait"]["state"] == "success"
    assert_healthy(await handle.fetch_history())


async def _states_seen_in_airflow(
    api: AirflowRest, handle: WorkflowHandle, dag_id: str, task_ids: list[str]
) -> dict[str, set[str]]:
    """Every state Airflow's REST API showed for ``task_ids`` while the run ran (polled every 0.2 s)."""
    seen: dict[str, set[str]] = {task_id: set() for task_id in task_ids}
    run_id = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            return seen
        if not run_id:
            run_id = (await handle.query("progress", result_type=RunProgress)).run_id
        if run_id:
            with contextlib.suppress(HTTPError):
                for task_id, ti in api.task_instances(dag_id, run_id).items():
                    if task_id in seen:
                        seen[task_id].add(ti["state"])
        await asyncio.sleep(0.2)
    return seen


async def test_runtime_mapping_and_waiting_sensors_leave_the_rows_the_scheduler_would(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    counter = tempfile.mktemp(prefix="deep-pokes-")
    handle = await start_deep(client, queues, "deep_semantics", conf={"counter": counter})
    seen = await _states_seen_in_airflow(api, handle, "deep_semantics", ["poke_wait"])
    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert "up_for_reschedule" in seen["poke_wait"], seen  # between pokes, as under Airflow's scheduler
    assert result.state == "success", [(t.task_id, t.map_index, t.state, t.error) for t in result.tasks]
    history = await handle.fetch_history()
    assert_healthy(history)
    found = api.request("GET", f"dags/deep_semantics/dagRuns/{result.run_id}/taskInstances?limit=100")
    in_airflow = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in found["task_instances"]}
    # Second-order mapping over runtime values: every index has its own row, as the scheduler makes them.
    assert in_airflow == {
        ("numbers", -1): "success",
        **{("double", i): "success" for i in range(3)},
        **{("plus_one", i): "success" for i in range(3)},
        ("total", -1): "success",
        ("deferred_wait", -1): "success",
        ("poke_wait", -1): "success",
    }
    assert api.xcom("deep_semantics", result.run_id, "total") == (2 + 1) + (4 + 1) + (6 + 1)
    assert Path(counter).read_text().count("poke") == 3
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    # The sensor's three pokes wait on two timers. The 3 s deferral may find its moment already passed on a
    # busy machine (no timer then): test_a_deferred_task_shows_deferred_in_airflow_while_its_trigger_waits
    # checks deferral with a wait long enough to watch.
    assert len(timers) >= 2, "the sensor's pokes wait on workflow timers"


async def test_runs_share_an_airflow_pool_and_never_overlap_in_it(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, tmp_path: Path
) -> None:
    """Two runs, two tries each, one slot: the tries take turns, and Airflow's Pools page counts them."""
    api.request("POST", "pools", {"name": "deep_one_slot", "slots": 1, "description": "one at a time"})
    log = tmp_path / "holds.log"
    handles = [await start_deep(client, queues, "deep_pooled", conf={"log": str(log)}) for _ in range(2)]
    seen_running = 0
    done = asyncio.gather(*(handle.result() for handle in handles))
    while not done.done():
        pool = api.request("GET", "pools/deep_one_slot")
        assert pool["running_slots"] + pool["queued_slots"] <= 1, pool
        seen_running = max(seen_running, pool["running_slots"])
        await asyncio.sleep(0.2)
    results = await done
    assert [r.state for r in results] == ["success", "success"]
    assert seen_running == 1  # the Pools page saw the Temporal-run tries in the slot
    marks = [(float(at), what) for what, at in (line.split() for line in log.read_text().splitlines())]
    marks.sort()
    assert [what for _, what in marks] == ["start", "end"] * 4, marks  # one at a time, across both runs
    for handle in handles:
        history = await handle.fetch_history()
        assert_healthy(history)
    record_history("deep_pool", history)


async def test_max_active_tis_per_dag_counts_the_tries_of_every_run(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, tmp_path: Path
) -> None:
    """Three runs of a DAG whose task allows one active try across runs: the tries take turns."""
    log = tmp_path / "holds.log"
    handles = [await start_deep(client, queues, "deep_one_per_dag", conf={"log": str(log)}) for _ in range(3)]
    results = await asyncio.gather(*(handle.result() for handle in handles))
    assert [r.state for r in results] == ["success"] * 3
    marks = sorted((float(at), what) for what, at in (line.split() for line in log.read_text().splitlines()))
    assert [what for _, what in marks] == ["start", "end"] * 3, marks  # never two at once
    for result in results:
        assert api.task_instances("deep_one_per_dag", result.run_id)["hold"]["state"] == "success"
    for handle in handles:
        history = await handle.fetch_history()
        assert_healthy(history)
    record_history("deep_task_limit", history)


async def test_a_task_in_a_missing_pool_fails_with_the_reason(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    result = await (await start_deep(client, queues, "deep_pool_missing")).result()
    assert result.state == "failed"
    (task,) = result.tasks
    assert task.state == "failed" and "deep_no_such_pool" in (task.error or ""), task.error
    assert api.task_instances("deep_pool_missing", result.run_id)["nowhere"]["state"] == "failed"


async def test_depends_on_past_waits_for_the_previous_run_in_airflows_db(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, tmp_path: Path
) -> None:
    """The previous run's `gate` failed: this run's `gate` waits, as under Airflow's scheduler, until a
    user marks the old one success in the UI; then it runs."""
    log = tmp_path / "gates.log"
    first_date = datetime(2025, 3, 1, tzinfo=UTC)
    first = await (
        await start_deep(client, queues, "deep_past", logical_date=first_date, conf={"fail": True, "log": str(log)})
    ).result()
    assert first.state == "failed"
    handle = await start_deep(
        client, queues, "deep_past", logical_date=first_date + timedelta(days=1), conf={"log": str(log)}
    )

    def second_run_id() -> str | None:
        return next((r["dag_run_id"] for r in api.runs("deep_past") if r["dag_run_id"] != first.run_id), None)

    second_run = await wait_until(second_run_id, 60, "the second run in Airflow")
    await asyncio.sleep(12)  # two idle rechecks: the gate stays shut
    assert api.task_instances("deep_past", second_run)["gate"]["state"] in (None, "scheduled")
    assert api.run("deep_past", second_run)["state"] == "running"
    assert log.read_text().splitlines() == [first.run_id]
    path = f"dags/deep_past/dagRuns/{urllib.parse.quote(first.run_id, safe='')}/taskInstances/gate"
    api.request("PATCH", path, {"new_state": "success"})
    second = await asyncio.wait_for(handle.result(), 120)
    assert second.state == "success"
    assert log.read_text().splitlines() == [first.run_id, second.run_id]
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("deep_depends_on_past", history)


async def test_a_run_that_succeeds_in_time_prunes_its_deadlines_as_airflow_does(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest
) -> None:
    """Airflow removes a successful run's Deadline rows that were not missed (so no miss callback fires for
    it later); a failed run keeps them, for the scheduler to handle."""

    def deadlines(run_id: str) -> int:
        path = f"{api.base}/ui/dags/deep_deadline/dagRuns/{urllib.parse.quote(run_id, safe='')}/deadlines"
        with urllib.request.urlopen(path, timeout=30) as response:
            return int(json.loads(response.read())["total_entries"])

    now = datetime.now(UTC)
    failed = await (await start_deep(client, queues, "deep_deadline", logical_date=now, conf={"fail": True})).result()
    succeeded = await (
        await start_deep(client, queues, "deep_deadline", logical_date=now + timedelta(seconds=1))
    ).result()
    assert (failed.state, succeeded.state) == ("failed", "success")
    assert deadlines(failed.run_id) == 1  # created with the run, as Airflow creates it
    assert deadlines(succeeded.run_id) == 0
