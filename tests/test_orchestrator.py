"""The orchestrator plugin with the real `airflow scheduler`, dag-processor and api-server running.

Runs of DAGs tagged `temporal` go to Temporal (REST API triggers and the timetable alike), exactly
once; other DAGs keep Airflow's LocalExecutor, even with many managed runs in flight; a run keeps the
executor decided when it started when its DAG is re-tagged; marking a run failed cancels its workflow;
a workflow ended from Temporal fails its run; clearing a task re-executes it through Temporal; marking a
task instance success/failed reaches the running workflow, which goes on from the user's state.

The scheduler examines at most 2 running runs per loop here (`max_dagruns_per_loop_to_schedule`), so a
few managed runs would be enough to starve Airflow-run DAGs if they took those slots.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from conftest import ROOT, assert_healthy, record_history
from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.local_stack import LocalStack
from temporal_airflow.models.converter import data_converter
from temporal_airflow.orchestrator.bridge import workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("deep")]

DAGS = ROOT / "tests" / "orchestrated_dags"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    stack = LocalStack(
        Path(tempfile.mkdtemp(prefix="orchestrated-stack-")),
        DAGS,
        # An idle scheduler sleeps up to 8 s between loops here (Airflow's default is 1 s), so that a run
        # waiting for the next loop is told apart from one the plugin woke the scheduler for.
        extra_env={
            "AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "8",
        },
    )
    try:
        stack.start_services()
        stack.start_api_server()
        stack.start_dag_processor()
        stack.start_scheduler()
        stack.start_workers()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> AirflowRest:
    return AirflowRest(stack.api_url)


@pytest.fixture
async def temporal(stack: LocalStack) -> Client:
    assert stack.temporal is not None
    return await Client.connect(stack.temporal.address, data_converter=data_converter())


async def _eventually(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


_FINAL = ("success", "failed")


def _state(api: AirflowRest, dag_id: str, run_id: str) -> str:
    return api.run(dag_id, run_id)["state"]


async def _executions(client: Client, wid: str) -> list[Any]:
    return [e async for e in client.list_workflows(f"WorkflowId = '{wid}'")]


def _patch_run_state(api: AirflowRest, dag_id: str, run_id: str, state: str) -> None:
    api.request("PATCH", f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}", {"state": state})


def _dag_tags(api: AirflowRest, dag_id: str) -> set[str]:
    return {tag["name"] for tag in api.request("GET", f"dags/{dag_id}")["tags"]}


@pytest.mark.asyncio(loop_scope="session")
async def test_rest_api_trigger_runs_as_exactly_one_workflow(
    api: AirflowRest, temporal: Client, stack: LocalStack
) -> None:
    run_id = api.trigger("managed_chain")
    await _eventually(lambda: _state(api, "managed_chain", run_id) == "success", 180, "managed_chain to succeed")
    assert {t: ti["state"] for t, ti in api.task_instances("managed_chain", run_id).items()} == {
        "first": "success",
        "second": "success",
        "third": "success",
    }
    assert api.xcom("managed_chain", run_id, "third") == 3
    wid = workflow_id("managed_chain", run_id)
    executions = await _executions(temporal, wid)
    assert len(executions) == 1 and executions[0].status == WorkflowExecutionStatus.COMPLETED
    assert api.run("managed_chain", run_id)["note"] == f"Runs on Temporal: workflow `{wid}` in namespace `default`."


@pytest.mark.asyncio(loop_scope="session")
async def test_a_mapped_run_triggered_over_rest_shows_every_mapped_index(api: AirflowRest, temporal: Client) -> None:
    run_id = api.trigger("managed_mapped")
    await _eventually(lambda: _state(api, "managed_mapped", run_id) in _FINAL, 180, "managed_mapped to end")
    runs = f"dags/managed_mapped/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    found = api.request("GET", f"{runs}/taskInstances?limit=100")["task_instances"]
    in_airflow = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in found}
    assert _state(api, "managed_mapped", run_id) == "success", in_airflow
    # Second-order mapping over runtime values: each index its own row, as the scheduler makes them.
    assert in_airflow == {
        ("numbers", -1): "success",
        **{("double", i): "success" for i in range(3)},
        **{("plus_one", i): "success" for i in range(3)},
        ("total", -1): "success",
    }
    # What the UI's mapped-tasks tab lists, and each index's XCom.
    listed = api.request("GET", f"{runs}/taskInstances/plus_one/listMapped")
    assert listed["total_entries"] == 3
    assert sorted((ti["map_index"], ti["state"]) for ti in listed["task_instances"]) == [
        (i, "success") for i in range(3)
    ]
    values = [
        api.request("GET", f"{runs}/taskInstances/plus_one/xcomEntries/return_value?map_index={i}")["value"]
        for i in range(3)
    ]
    assert values == [3, 5, 7]
    assert api.xcom("managed_mapped", run_id, "total") == 15
    executions = await _executions(temporal, workflow_id("managed_mapped", run_id))
    assert len(executions) == 1 and executions[0].status == WorkflowExecutionStatus.COMPLETED


@pytest.mark.asyncio(loop_scope="session")
async def test_a_triggered_managed_run_starts_without_waiting_out_the_schedulers_idle_sleep(
    api: AirflowRest,
) -> None:
    # Triggered at a random moment of the scheduler's idle sleep (up to 8 s here, or to its next timed
    # event, at most 5 s away), a run would wait ~2.5 s on average for the next loop to start it; all four
    # under 2 s would then be a 1-in-40 chance. The plugin wakes the loop as soon as the run is queued.
    waits = []
    for _ in range(4):
        run_id = api.trigger("managed_chain")
        done = lambda run_id=run_id: _state(api, "managed_chain", run_id) == "success"  # noqa: E731
        await _eventually(done, 180, "managed_chain to succeed")
        run = api.run("managed_chain", run_id)
        waits.append((_when(run["start_date"]) - _when(run["queued_at"])).total_seconds())
    assert max(waits) < 2.0, f"queued → running took {waits} s"


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.asyncio(loop_scope="session")
async def test_a_note_given_at_trigger_is_kept(api: AirflowRest) -> None:
    run = api.request("POST", "dags/managed_chain/dagRuns", {"logical_date": None, "note": "rerun for ticket 42"})
    run_id = run["dag_run_id"]
    await _eventually(lambda: _state(api, "managed_chain", run_id) == "success", 180, "managed_chain to succeed")
    assert api.run("managed_chain", run_id)["note"] == "rerun for ticket 42"


@pytest.mark.asyncio(loop_scope="session")
async def test_scheduled_run_is_executed_by_temporal(api: AirflowRest, temporal: Client) -> None:
    def finished_scheduled_run() -> dict | None:
        runs = api.request("GET", "dags/managed_scheduled/dagRuns")["dag_runs"]
        done = [r for r in runs if r["run_type"] == "scheduled" and r["state"] == "success"]
        return done[0] if done else None

    run = await _eventually(finished_scheduled_run, 180, "a scheduled run of managed_scheduled")
    assert api.xcom("managed_scheduled", run["dag_run_id"], "tick") == run["dag_run_id"]
    executions = await _executions(temporal, workflow_id("managed_scheduled", run["dag_run_id"]))
    assert len(executions) == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_unmanaged_dag_runs_on_airflows_executor_and_scheduler_never_queues_managed_tasks(
    api: AirflowRest, temporal: Client, stack: LocalStack
) -> None:
    run_id = api.trigger("unmanaged")
    await _eventually(lambda: _state(api, "unmanaged", run_id) == "success", 180, "unmanaged to succeed")
    assert api.xcom("unmanaged", run_id, "on_airflow_executor") == "ran on LocalExecutor"
    assert await _executions(temporal, workflow_id("unmanaged", run_id)) == []
    scheduler_log = stack.log_path("scheduler").read_text()
    assert "<TaskInstance: unmanaged.on_airflow_executor" in scheduler_log  # the executor path is logged
    for managed in ("managed_chain.", "managed_scheduled."):
        assert f"<TaskInstance: {managed}" not in scheduler_log


@pytest.mark.asyncio(loop_scope="session")
async def test_marking_a_run_failed_cancels_its_workflow(api: AirflowRest, temporal: Client) -> None:
    run_id = api.trigger("managed_chain", {"seconds": 60})
    await _eventually(
        lambda: api.task_instances("managed_chain", run_id)["second"]["state"] == "running", 180, "`second` running"
    )
    _patch_run_state(api, "managed_chain", run_id, "failed")
    handle = temporal.get_workflow_handle(workflow_id("managed_chain", run_id))

    async def cancelled() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

    deadline = time.monotonic() + 120
    while not await cancelled():
        assert time.monotonic() < deadline, "workflow was not cancelled"
        await asyncio.sleep(1)
    assert _state(api, "managed_chain", run_id) == "failed"


@pytest.mark.asyncio(loop_scope="session")
async def test_clearing_a_task_reruns_it_through_temporal(api: AirflowRest, temporal: Client) -> None:
    run_id = api.trigger("managed_chain")
    await _eventually(lambda: _state(api, "managed_chain", run_id) == "success", 180, "managed_chain to succeed")
    api.request(
        "POST",
        "dags/managed_chain/clearTaskInstances",
        {"dry_run": False, "task_ids": ["third"], "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
    )

    def rerun_done() -> dict | None:
        tis = api.task_instances("managed_chain", run_id)
        return tis if tis["third"]["try_number"] == 2 and _state(api, "managed_chain", run_id) == "success" else None

    tis = await _eventually(rerun_done, 180, "`third` to re-run")
    assert (tis["first"]["try_number"], tis["second"]["try_number"]) == (1, 1)  # not re-run
    for clear_number in (0, 1):  # the original execution, and the one the clear started
        assert len(await _executions(temporal, workflow_id("managed_chain", run_id, clear_number))) == 1


def _patch_task_state(api: AirflowRest, dag_id: str, run_id: str, task_id: str, state: str) -> None:
    path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
    api.request("PATCH", path, {"new_state": state})


@pytest.mark.asyncio(loop_scope="session")
async def test_marking_tasks_in_airflow_reaches_the_running_workflow(
    api: AirflowRest, temporal: Client, tmp_path: Path
) -> None:
    """Mark a running task success: it is stopped and its downstream runs at once. Mark a task that has
    not started failed: it never runs and its downstream is upstream_failed, as under Airflow."""
    counters = {name: tmp_path / f"{name}.txt" for name in ("ran_on", "held")}
    ran_on = api.trigger("managed_marks", {"seconds": 600, "counter": str(counters["ran_on"])})
    held = api.trigger("managed_marks", {"seconds": 20, "counter": str(counters["held"])})
    for run_id in (ran_on, held):
        await _eventually(
            lambda run_id=run_id: api.task_instances("managed_marks", run_id)["slow"]["state"] == "running",
            180,
            "`slow` running",
        )
    started = time.monotonic()
    _patch_task_state(api, "managed_marks", ran_on, "slow", "success")
    _patch_task_state(api, "managed_marks", held, "after", "failed")
    ends = {ran_on: "success", held: "failed"}
    for run_id, state in ends.items():
        await _eventually(lambda run_id=run_id: _state(api, "managed_marks", run_id) in _FINAL, 180, "the run to end")
        assert _state(api, "managed_marks", run_id) == state
    assert time.monotonic() - started < 300, "the marked `slow` kept running"
    tis = {run_id: api.task_instances("managed_marks", run_id) for run_id in ends}
    assert {t: ti["state"] for t, ti in tis[ran_on].items()} == dict.fromkeys(("slow", "after", "last"), "success")
    assert {t: ti["state"] for t, ti in tis[held].items()} == {
        "slow": "success",
        "after": "failed",
        "last": "upstream_failed",
    }
    assert counters["ran_on"].read_text().splitlines() == ["slow started", "after", "last"]
    assert counters["held"].read_text().splitlines() == ["slow started", "slow finished"]
    for run_id, name in ((ran_on, "deep_marked_running_task"), (held, "deep_marked_waiting_task")):
        handle = temporal.get_workflow_handle(workflow_id("managed_marks", run_id))
        await handle.result()
        history = await handle.fetch_history()
        assert_healthy(history)
        record_history(name, history)


@pytest.mark.asyncio(loop_scope="session")
async def test_clearing_a_task_of_a_running_run_reruns_it_and_leaves_the_others_running(
    api: AirflowRest, temporal: Client, tmp_path: Path
) -> None:
    """As under Airflow's scheduler: the cleared task runs again (try 2), the task still running is not
    interrupted, and the same workflow carries on (no second one for the new clear number)."""
    counter = tmp_path / "bodies.txt"
    run_id = api.trigger("managed_clear", {"seconds": 40, "counter": str(counter)})

    def quick_done_slow_running() -> bool:
        tis = api.task_instances("managed_clear", run_id)
        return tis["quick"]["state"] == "success" and tis["slow"]["state"] == "running"

    await _eventually(quick_done_slow_running, 180, "`quick` done while `slow` runs")
    api.request(
        "POST",
        "dags/managed_clear/clearTaskInstances",
        {"dry_run": False, "task_ids": ["quick"], "dag_run_id": run_id, "only_failed": False},
    )
    await _eventually(lambda: _state(api, "managed_clear", run_id) in _FINAL, 240, "the run to end")
    assert _state(api, "managed_clear", run_id) == "success"
    tis = api.task_instances("managed_clear", run_id)
    assert {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()} == {
        "quick": ("success", 2),
        "slow": ("success", 1),
        "joined": ("success", 1),
    }
    assert sorted(counter.read_text().splitlines()) == sorted(
        ["quick", "slow started", "quick", "slow finished", "joined"]
    )
    assert len(await _executions(temporal, workflow_id("managed_clear", run_id, 1))) == 0
    handle = temporal.get_workflow_handle(workflow_id("managed_clear", run_id))
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("deep_cleared_while_running", history)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_keeps_its_executor_when_its_dag_is_retagged_mid_run(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    counters = {dag_id: tmp_path / f"{dag_id}.txt" for dag_id in ("retagged_to_airflow", "retagged_to_temporal")}
    runs = {dag_id: api.trigger(dag_id, {"counter": str(path), "seconds": 40}) for dag_id, path in counters.items()}
    for dag_id, run_id in runs.items():
        await _eventually(
            lambda d=dag_id, r=run_id: api.task_instances(d, r)["slow"]["state"] == "running", 120, f"{dag_id} slow"
        )
    (stack.airflow_home / "retagged.flipped").touch()
    stack.airflow("dags", "reserialize")
    await _eventually(
        lambda: _dag_tags(api, "retagged_to_temporal") == {"temporal"} and not _dag_tags(api, "retagged_to_airflow"),
        60,
        "the tags to flip",
    )
    for dag_id, run_id in runs.items():
        await _eventually(lambda d=dag_id, r=run_id: _state(api, d, r) in ("success", "failed"), 180, f"{dag_id} end")
        assert _state(api, dag_id, run_id) == "success"
        assert sorted(counters[dag_id].read_text().split()) == ["first", "last", "slow"]  # each body ran once
    on_temporal = await _executions(temporal, workflow_id("retagged_to_airflow", runs["retagged_to_airflow"]))
    assert len(on_temporal) == 1 and on_temporal[0].status == WorkflowExecutionStatus.COMPLETED
    assert await _executions(temporal, workflow_id("retagged_to_temporal", runs["retagged_to_temporal"])) == []


@pytest.mark.asyncio(loop_scope="session")
async def test_managed_runs_never_crowd_airflow_run_dags_out_of_the_scheduler(api: AirflowRest) -> None:
    managed = [api.trigger("managed_chain", {"seconds": 60}) for _ in range(4)]
    try:
        await _eventually(
            lambda: all(_state(api, "managed_chain", r) == "running" for r in managed), 60, "managed runs running"
        )
        run_id = api.trigger("unmanaged")  # at its usual latency, long before the managed runs end
        await _eventually(lambda: _state(api, "unmanaged", run_id) == "success", 40, "unmanaged to succeed")
    finally:
        for managed_run in managed:
            _patch_run_state(api, "managed_chain", managed_run, "failed")  # frees the activity worker


@pytest.mark.parametrize("ending", ["terminate", "cancel"])
@pytest.mark.asyncio(loop_scope="session")
async def test_a_workflow_ended_from_temporal_fails_its_run_and_leaves_no_task_running(
    api: AirflowRest, temporal: Client, ending: str
) -> None:
    run_id = api.trigger("managed_chain", {"seconds": 60})
    await _eventually(
        lambda: api.task_instances("managed_chain", run_id)["second"]["state"] == "running", 180, "`second` running"
    )
    handle = temporal.get_workflow_handle(workflow_id("managed_chain", run_id))
    await (handle.terminate("from the test") if ending == "terminate" else handle.cancel())
    deadline = time.monotonic() + 120  # a cancelled workflow first waits for its running task to stop
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert time.monotonic() < deadline, "the workflow did not end"
        await asyncio.sleep(0.5)
    await _eventually(lambda: _state(api, "managed_chain", run_id) == "failed", 15, "the run to fail")
    states = {t: ti["state"] for t, ti in api.task_instances("managed_chain", run_id).items()}
    assert states == {"first": "success", "second": "failed", "third": "upstream_failed"}
    assert "ended " in api.run("managed_chain", run_id)["note"]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_five_megabyte_conf_is_carried_to_the_tasks(api: AirflowRest) -> None:
    blob = "x" * 5_000_000
    run_id = api.trigger("managed_chain", {"seconds": 0, "blob": blob})
    await _eventually(lambda: _state(api, "managed_chain", run_id) in ("success", "failed"), 180, "the run to end")
    assert _state(api, "managed_chain", run_id) == "success"
    assert api.xcom("managed_chain", run_id, "third") == 3


@pytest.mark.asyncio(loop_scope="session")
async def test_a_non_ascii_dag_id_runs_on_temporal(api: AirflowRest, temporal: Client) -> None:
    dag_id = "managed_données"
    path = f"dags/{urllib.parse.quote(dag_id)}/dagRuns"
    run_id = api.request("POST", path, {"logical_date": None})["dag_run_id"]

    def state() -> str:
        return str(api.request("GET", f"{path}/{urllib.parse.quote(run_id, safe='')}")["state"])

    await _eventually(lambda: state() in ("success", "failed"), 180, "the run to end")  # never stuck
    assert state() == "success"  # its tasks push and pull XComs through the in-process Execution API
    executions = await _executions(temporal, workflow_id(dag_id, run_id))
    assert len(executions) == 1 and executions[0].status == WorkflowExecutionStatus.COMPLETED


def test_plugin_installs_and_loads_without_the_worker_packages(tmp_path: Path) -> None:
    """`pip install` of the orchestrator alone registers the plugin; no workflow/activity code comes along."""
    venv = tmp_path / "venv"
    uv = (
        ["uv"] if subprocess.run(["which", "uv"], capture_output=True).returncode == 0 else [sys.executable, "-m", "uv"]
    )
    subprocess.run([*uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*uv, "pip", "install", "-q", "-p", str(python), str(ROOT / "packages" / "models"),
         str(ROOT / "packages" / "orchestrator")],
        check=True, timeout=900,
    )  # fmt: skip
    probe = (
        "import importlib.util, json;"
        "from airflow import plugins_manager as pm;"
        "print(json.dumps({'plugins': [p['name'] for p in pm.get_plugin_info() if p['listeners']],"
        " 'workers': [m for m in ('temporal_airflow.workflows', 'temporal_airflow.activities')"
        " if importlib.util.find_spec(m)]}))"
    )
    env = {"AIRFLOW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "temporal_orchestrator" in found["plugins"]
    assert found["workers"] == []


@pytest.mark.asyncio(loop_scope="session")
async def test_operators_that_reach_other_dag_runs_behave_as_under_the_scheduler(
    api: AirflowRest, temporal: Client
) -> None:
    """TriggerDagRunOperator (polling and deferrable, waiting for completion), ExternalTaskSensor and
    LatestOnlyOperator in a Temporal-run DAG: each child run is itself handed to Temporal, once."""
    logical_date = "2025-06-01T00:00:00+00:00"
    run_id = api.request("POST", "dags/managed_cross_dag/dagRuns", {"logical_date": logical_date})["dag_run_id"]
    await _eventually(lambda: _state(api, "managed_cross_dag", run_id) in _FINAL, 300, "managed_cross_dag to end")
    states = {t: ti["state"] for t, ti in api.task_instances("managed_cross_dag", run_id).items()}
    assert states == dict.fromkeys(("trigger", "trigger_deferred", "sensor", "latest_only", "after"), "success")
    assert _state(api, "managed_cross_dag", run_id) == "success"
    for child in (f"{run_id}__child", f"{run_id}__deferred_child"):
        assert _state(api, "managed_chain", child) == "success"
        found = await _executions(temporal, workflow_id("managed_chain", child))
        assert len(found) == 1 and found[0].status == WorkflowExecutionStatus.COMPLETED
    handle = temporal.get_workflow_handle(workflow_id("managed_cross_dag", run_id))
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("deep_cross_dag_operators", history)


def _lines(path: Path) -> list[tuple[str, float, int]]:
    """The ``managed_kill`` body's record: (what, when, pid) per line."""
    if not path.exists():
        return []
    return [(w, float(t), int(p)) for w, t, p in (line.split() for line in path.read_text().splitlines() if line)]


def _first(path: Path, what: str) -> tuple[str, float, int] | None:
    return next((line for line in _lines(path) if line[0] == what), None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _dag_known(api: AirflowRest, dag_id: str) -> bool:
    try:
        api.request("GET", f"dags/{dag_id}")
    except urllib.error.HTTPError:
        return False
    return True


_ACTIONS = ["run_failed", "run_success", "task_success", "task_failed", "task_skipped", "clear", "cancel", "terminate"]


@pytest.mark.parametrize("action", _ACTIONS)
@pytest.mark.asyncio(loop_scope="session")
async def test_every_operator_action_reaches_the_running_task_process(
    api: AirflowRest, temporal: Client, tmp_path: Path, action: str
) -> None:
    """As under Airflow: the try's process gets the kill path (SIGTERM: the operator's ``on_kill``, then
    SIGKILL after a grace) within a few seconds of the action, and the run goes on from the new state."""
    log, release = tmp_path / "body.log", tmp_path / "release"
    await _eventually(lambda: _dag_known(api, "managed_kill"), 180, "managed_kill to be parsed")
    run_id = api.trigger("managed_kill", {"log": str(log), "release": str(release), "seconds": 600})
    started = await _eventually(lambda: _first(log, "start1"), 180, "the body to start")
    await _eventually(
        lambda: api.task_instances("managed_kill", run_id)["waiting"]["state"] == "running", 60, "`waiting` running"
    )
    handle = temporal.get_workflow_handle(workflow_id("managed_kill", run_id))
    acted = time.time()
    if action in ("run_failed", "run_success"):
        _patch_run_state(api, "managed_kill", run_id, action.removeprefix("run_"))
    elif action.startswith("task_"):
        _patch_task_state(api, "managed_kill", run_id, "waiting", action.removeprefix("task_"))
    elif action == "clear":
        api.request(
            "POST",
            "dags/managed_kill/clearTaskInstances",
            {"dry_run": False, "task_ids": ["waiting"], "dag_run_id": run_id, "only_failed": False},
        )
    elif action == "cancel":
        await handle.cancel()
    else:
        await handle.terminate("from the test")
    killed = await _eventually(lambda: _first(log, "killed"), 60, "the operator's on_kill")
    assert killed[1] - acted < 5, f"on_kill ran {killed[1] - acted:.1f} s after the action"
    await _eventually(lambda: not _alive(started[2]), 30, "the killed try's process to end")
    gone = time.time()
    print(f"{action}: on_kill {killed[1] - acted:.2f} s after the action, process gone by {gone - acted:.2f} s")
    assert gone - acted < 8, f"the try's process ended {gone - acted:.1f} s after the action"
    if action == "task_success":
        after = await _eventually(lambda: _first(log, "after"), 60, "the downstream task")
        print(f"{action}: downstream started {after[1] - acted:.2f} s after the mark")
        assert after[1] - acted < 5, f"the downstream started {after[1] - acted:.1f} s after the mark"
    if action == "clear":
        await _eventually(lambda: _first(log, "start2"), 60, "the cleared task's next try")
        release.touch()
    await _eventually(lambda: _state(api, "managed_kill", run_id) in _FINAL, 120, "the run to end")
    deadline = time.monotonic() + 60
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert time.monotonic() < deadline, "the workflow did not end"
        await asyncio.sleep(0.5)
    states = {t: ti["state"] for t, ti in api.task_instances("managed_kill", run_id).items()}
    expected = {
        "run_failed": ("failed", {"waiting": "failed"}),
        "run_success": ("success", {"waiting": "success"}),
        "task_success": ("success", {"waiting": "success", "after": "success"}),
        "task_failed": ("failed", {"waiting": "failed", "after": "upstream_failed"}),
        "task_skipped": ("success", {"waiting": "skipped", "after": "skipped"}),
        "clear": ("success", {"waiting": "success", "after": "success"}),
        "cancel": ("failed", {"waiting": "failed", "after": "upstream_failed"}),
        "terminate": ("failed", {"waiting": "failed", "after": "upstream_failed"}),
    }[action]
    assert _state(api, "managed_kill", run_id) == expected[0]
    assert {t: s for t, s in states.items() if t in expected[1]} == expected[1], states
    words = [w for w, _, _ in _lines(log)]
    assert "end1" not in words, words
    assert words.count("killed") == 1, words
    assert all(not _alive(pid) for _, _, pid in _lines(log))
