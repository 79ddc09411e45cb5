"""Chaos tests: the real deep-mode stack (Postgres, Temporal, Airflow's api-server, scheduler and
dag-processor with the orchestrator plugin, a workflow worker and an activity worker, each its own
process) while its parts are killed, stopped and flooded.

Every test checks the run's final states through Airflow's REST API, how many times each task body ran
(the chaos DAGs append a line per body run to a counter file named in the run's conf, see
`tests/chaos_dags/chaos.py`) and that no workflow task failed or timed out in the run's history.

One stack serves the whole module; tests that break a component leave it running again. A task's
worker is presumed dead after 10 s without a heartbeat here (`TEMPORAL_TASK_HEARTBEAT_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

from conftest import ROOT, executions

# The stack's helpers, imported in one place (they may move to another package).
from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.local_stack import LocalStack
from temporal_airflow.models import DEEP_WORKFLOW
from temporal_airflow.models.converter import data_converter
from temporal_airflow.orchestrator.bridge import workflow_id

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("chaos"),
    pytest.mark.asyncio(loop_scope="session"),
]

DAGS = ROOT / "tests" / "chaos_dags"
HEARTBEAT_TIMEOUT = 10
#: Triggers in the two-scheduler test (the issue's figure).
FLOOD_RUNS = 100


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _start_worker(stack: LocalStack, kind: str) -> None:
    """`temporal-airflow worker workflows|activities` as the stack process `{kind}-worker`."""
    stack.start_process(f"{kind}-worker", [_bin("temporal-airflow"), "worker", kind])


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    stack = LocalStack(
        Path(tempfile.mkdtemp(prefix="chaos-stack-")),
        DAGS,
        extra_env={
            "TEMPORAL_TASK_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "TEMPORAL_RECONCILE_INTERVAL": "2",
            "TEMPORAL_AIRFLOW_MAX_CONCURRENT_TASKS": "4",
        },
    )
    try:
        stack.start_services()
        stack.start_api_server()
        stack.start_dag_processor()
        stack.start_scheduler()
        _start_worker(stack, "workflows")
        _start_worker(stack, "activities")
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


# -- helpers ----------------------------------------------------------------------------------------


class BodyLog:
    """The counter file the chaos DAGs' task bodies append to, and its gate file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    @property
    def conf(self) -> dict[str, str]:
        return {"counter": str(self.path)}

    def lines(self) -> list[list[str]]:
        return [line.split(" ") for line in self.path.read_text().splitlines() if line]

    def starts(self, run_id: str | None = None) -> Counter[str]:
        """task_id -> how many times its body started (in ``run_id``, or in any run)."""
        return Counter(w[2] for w in self.lines() if w[0] == "start" and run_id in (None, w[1]))

    def ends(self, run_id: str | None = None) -> Counter[str]:
        return Counter(w[2] for w in self.lines() if w[0] == "end" and run_id in (None, w[1]))

    def pids(self, task_id: str) -> list[int]:
        return [int(w[3]) for w in self.lines() if w[0] == "start" and w[2] == task_id]

    def open_gate(self) -> None:
        Path(f"{self.path}.gate").touch()


async def _eventually(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _state(api: AirflowRest, dag_id: str, run_id: str) -> str:
    try:
        return str(api.run(dag_id, run_id)["state"])
    except (urllib.error.URLError, OSError):
        return "unknown"  # the api-server may be unable to answer for a moment (DB outage)


async def _ended(api: AirflowRest, dag_id: str, run_id: str, timeout: float = 180) -> str:
    return str(
        await _eventually(
            lambda: (s := _state(api, dag_id, run_id)) in ("success", "failed") and s, timeout, f"{run_id} to end"
        )
    )


def _task_states(api: AirflowRest, dag_id: str, run_id: str) -> dict[str, str]:
    return {t: ti["state"] for t, ti in api.task_instances(dag_id, run_id).items()}


async def _wids(temporal: Client, dag_id: str) -> Counter[str]:
    """Workflow id -> number of executions, for every deep workflow of ``dag_id`` (one visibility query)."""
    prefix = workflow_id(dag_id, "")[: -len(":clear0")]
    found: Counter[str] = Counter()
    async for execution in temporal.list_workflows(f"WorkflowType = '{DEEP_WORKFLOW}'"):
        if execution.id.startswith(prefix):
            found[execution.id] += 1
    return found


async def _assert_one_healthy_workflow(temporal: Client, dag_id: str, run_id: str, sticky_timeouts: int = 0) -> None:
    """The run has exactly one workflow (execution chain), it completed, no workflow task failed.

    ``sticky_timeouts``: workflow tasks that may time out before they started. Temporal hands a workflow's
    next task to the worker that ran its last one (its sticky queue) and, when that worker is dead, times
    it out after 5 s and hands it to the shared queue: that is the designed fail-over, not a failed turn.
    """
    wid = workflow_id(dag_id, run_id)
    # The workflow's final sync ends the DagRun a moment before the workflow itself completes.
    await asyncio.wait_for(temporal.get_workflow_handle(wid).result(), 60)
    found = [e async for e in temporal.list_workflows(f"WorkflowId = '{wid}'")]
    assert len(found) == 1, f"{wid}: {len(found)} executions"
    assert found[0].status == WorkflowExecutionStatus.COMPLETED, found[0].status
    handle = temporal.get_workflow_handle(wid, run_id=found[0].run_id)
    troubles = [t for history in await executions(temporal, handle) for t in _workflow_task_troubles(history)]
    sticky = [t for t in troubles if t.endswith("timed out (TIMEOUT_TYPE_SCHEDULE_TO_START)")]
    orphaned = [t for t in troubles if _taken_by_a_dead_worker(t)]
    assert len(sticky) <= sticky_timeouts and len(troubles) == len(sticky) + len(orphaned), f"{wid}: {troubles}"


def _taken_by_a_dead_worker(trouble: str) -> bool:
    """A workflow task that timed out after a worker process that no longer exists took it.

    Temporal may hand a task to a long poll of a worker killed a moment before (it learns of the dead
    poller only when the connection's end reaches the matching service); the task then times out and
    goes to a live worker: Temporal's designed recovery, like a sticky hand-over. A task taken by a live
    worker that never answered is a real fault and fails the test.
    """
    found = re.search(r"START_TO_CLOSE\) taken by (\d+)@", trouble)
    return found is not None and not psutil.pid_exists(int(found.group(1)))


def _workflow_task_troubles(history: WorkflowHistory) -> list[str]:
    """What `conftest.assert_healthy` rejects: each failed or timed-out workflow task, with its failure and
    the end of its stack trace (evidence for a report)."""
    found = []
    events = {event.event_id: event for event in history.events}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            found.append(f"#{event.event_id} failed: {failure.message} {failure.stack_trace}")
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            kind = event.workflow_task_timed_out_event_attributes.timeout_type
            started = events.get(event.workflow_task_timed_out_event_attributes.started_event_id)
            taken = f" taken by {started.workflow_task_started_event_attributes.identity}" if started else ""
            found.append(f"#{event.event_id} timed out ({TimeoutType.Name(kind)}){taken}")
    return found


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended: only its exit status is left to collect)."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def _each_once(log: BodyLog, run_id: str, tasks: set[str]) -> None:
    assert log.starts(run_id) == dict.fromkeys(tasks, 1), log.path.read_text()
    assert log.ends(run_id) == dict.fromkeys(tasks, 1), log.path.read_text()


CHAIN = {"first", "held", "last"}
WIDE = {"begin", "middle_0", "middle_1", "middle_2", "end"}


async def _held_run(api: AirflowRest, log: BodyLog) -> str:
    """Trigger chaos_chain and wait until its `held` task's body runs (and waits for the gate)."""
    run_id = api.trigger("chaos_chain", {**log.conf, "hold": "held"})
    await _eventually(lambda: log.starts(run_id)["held"] == 1, 180, "`held` to start")
    return run_id


async def _succeeds_once_each(
    api: AirflowRest, temporal: Client, log: BodyLog, run_id: str, sticky_timeouts: int = 0
) -> None:
    assert await _ended(api, "chaos_chain", run_id) == "success", _task_states(api, "chaos_chain", run_id)
    assert _task_states(api, "chaos_chain", run_id) == dict.fromkeys(CHAIN, "success")
    _each_once(log, run_id, CHAIN)
    await _assert_one_healthy_workflow(temporal, "chaos_chain", run_id, sticky_timeouts)


# -- tests --------------------------------------------------------------------------------------------


async def test_twenty_concurrent_runs_of_a_five_task_dag(api: AirflowRest, temporal: Client, tmp_path: Path) -> None:
    log = BodyLog(tmp_path / "bodies")
    started = time.monotonic()
    runs = [api.trigger("chaos_wide", log.conf) for _ in range(20)]
    for run_id in runs:
        assert await _ended(api, "chaos_wide", run_id, 300) == "success"
    print(f"20 runs x 5 tasks: {time.monotonic() - started:.0f}s")
    for run_id in runs:
        assert _task_states(api, "chaos_wide", run_id) == dict.fromkeys(WIDE, "success")
        _each_once(log, run_id, WIDE)
        await _assert_one_healthy_workflow(temporal, "chaos_wide", run_id)


def _rejected(call: Any) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as info:
        call()
    return info.value.code, info.value.read().decode()


async def test_bad_input_over_rest_is_rejected_with_a_clear_error(api: AirflowRest) -> None:
    runs_before = len(api.runs("chaos_params"))
    code, detail = _rejected(lambda: api.trigger("chaos_params", {"count": "many"}))
    assert code == 400 and "Invalid input for param count" in detail and "is not of type 'integer'" in detail
    assert len(api.runs("chaos_params")) == runs_before  # no run was created, so none can be stuck
    errors = await _eventually(
        lambda: {f: e for f, e in api.import_errors().items() if f.endswith("chaos_broken.py")}, 60, "import error"
    )
    assert "broken on purpose" in next(iter(errors.values()))
    code, detail = _rejected(lambda: api.trigger("chaos_broken"))
    assert code == 404 and "chaos_broken" in detail and "not found" in detail
    for odd in ("run with spaces", "ünïcødé-✓-运行"):
        body = {"logical_date": None, "dag_run_id": odd}
        code, detail = _rejected(lambda b=body: api.request("POST", "dags/chaos_one/dagRuns", b))  # type: ignore[misc]
        assert code == 400 and "does not match regex pattern" in detail, detail
    body = {"logical_date": None, "dag_run_id": "r" * 251}  # Airflow's column holds 250 characters
    code, detail = _rejected(lambda: api.request("POST", "dags/chaos_one/dagRuns", body))
    assert code == 422 and "Value rejected by database" in detail, detail


async def test_a_250_character_run_id_runs(api: AirflowRest, temporal: Client, tmp_path: Path) -> None:
    """Legal for Airflow, and its log folder `run_id=…` would pass the file system's 255-byte name limit:
    the folder name is shortened (with a hash of the whole id) and the run succeeds."""
    log = BodyLog(tmp_path / "bodies")
    run_id = "r" * 250
    api.request("POST", "dags/chaos_one/dagRuns", {"logical_date": None, "conf": log.conf, "dag_run_id": run_id})
    assert await _ended(api, "chaos_one", run_id) == "success"
    _each_once(log, run_id, {"only"})
    await _assert_one_healthy_workflow(temporal, "chaos_one", run_id)


async def test_sigkill_of_the_activity_worker_mid_task(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    log = BodyLog(tmp_path / "bodies")
    run_id = await _held_run(api, log)
    worker = stack.processes.pop("activities-worker")
    below = psutil.Process(worker.pid).children(recursive=True)  # its task host and the task's process
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: what it started must die with it
    worker.wait()
    # The try learns of its worker's death through its task host and zygote: let that finish before the
    # body may return (opened at once, a busy machine let the doomed body see the gate first).
    await _eventually(lambda: not _alive(below), 15, "the killed worker's task host and try to end")
    _start_worker(stack, "activities")
    log.open_gate()
    await _ended(api, "chaos_chain", run_id, 240)
    assert _state(api, "chaos_chain", run_id) == "success", _task_states(api, "chaos_chain", run_id)
    assert _task_states(api, "chaos_chain", run_id) == dict.fromkeys(CHAIN, "success")
    starts = log.starts(run_id)
    assert starts["first"] == starts["last"] == 1 and 1 <= starts["held"] <= 2, log.path.read_text()
    assert log.ends(run_id)["held"] == 1  # the killed try never returned
    assert not psutil.pid_exists(log.pids("held")[0]) or psutil.Process(log.pids("held")[0]).status() == "zombie"
    await _assert_one_healthy_workflow(temporal, "chaos_chain", run_id)


async def test_sigkill_of_the_workflow_worker_mid_run(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    log = BodyLog(tmp_path / "bodies")
    run_id = await _held_run(api, log)
    worker = stack.processes.pop("workflows-worker")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    _start_worker(stack, "workflows")
    log.open_gate()
    await _succeeds_once_each(api, temporal, log, run_id, sticky_timeouts=1)


async def test_temporal_server_restart_mid_task(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.temporal is not None
    log = BodyLog(tmp_path / "bodies")
    run_id = await _held_run(api, log)
    stack.temporal.stop()
    await asyncio.sleep(2)
    stack.temporal.start()
    log.open_gate()
    await _succeeds_once_each(api, temporal, log, run_id)


async def test_sigkill_of_the_scheduler_right_after_rest_triggers(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    log = BodyLog(tmp_path / "bodies")
    runs = []
    for _ in range(3):  # the kill lands on each run at another step of its hand-over
        runs.append(api.trigger("chaos_one", log.conf))
        await asyncio.sleep(0.3)
    stack.stop_process("scheduler", signal.SIGKILL)
    print("states at the kill:", [_state(api, "chaos_one", r) for r in runs])
    stack.start_scheduler()
    for run_id in runs:
        assert await _ended(api, "chaos_one", run_id, 240) == "success"
        _each_once(log, run_id, {"only"})
        # 100 runs at once on 2 shared cores saturate the workflow worker on purpose: a run's next task may
        # wait out its sticky queue and go to the shared one (Temporal's hand-over, never a failed turn).
        await _assert_one_healthy_workflow(temporal, "chaos_one", run_id, sticky_timeouts=1)


async def test_two_schedulers_and_a_flood_of_rest_triggers(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    """Both schedulers hand runs over (listener and reconciler race); each run still gets one workflow."""
    stack.start_process("scheduler-2", [_bin("airflow"), "scheduler", "--skip-serve-logs"])
    try:
        log = BodyLog(tmp_path / "bodies")
        started = time.monotonic()
        runs = [api.trigger("chaos_one", log.conf) for _ in range(FLOOD_RUNS)]
        triggered = time.monotonic()
        for run_id in runs:
            assert await _ended(api, "chaos_one", run_id, 600) == "success"
        print(f"{FLOOD_RUNS} triggers: {triggered - started:.1f}s, all ended after {time.monotonic() - started:.0f}s")
    finally:
        stack.stop_process("scheduler-2")
    wids = await _wids(temporal, "chaos_one")  # every deep workflow, listed through visibility
    for run_id in runs:
        assert wids[workflow_id("chaos_one", run_id)] == 1
        _each_once(log, run_id, {"only"})
        # 100 runs at once on 2 shared cores saturate the workflow worker on purpose: a run's next task may
        # wait out its sticky queue and go to the shared one (Temporal's hand-over, never a failed turn).
        await _assert_one_healthy_workflow(temporal, "chaos_one", run_id, sticky_timeouts=1)


async def test_fifty_running_managed_runs_leave_room_for_airflow_run_dags(
    api: AirflowRest, temporal: Client, tmp_path: Path
) -> None:
    """Airflow's scheduler examines 20 running runs per loop (`max_dagruns_per_loop_to_schedule`'s
    default): 50 running managed runs must not take those places from a DAG Airflow itself runs."""
    log = BodyLog(tmp_path / "bodies")
    await _unmanaged_run_time(api, log)  # the DAG's first run also waits for LocalExecutor's workers
    idle = await _unmanaged_run_time(api, log)
    held = [api.trigger("chaos_one", {**log.conf, "hold": "only"}) for _ in range(50)]
    try:
        await _eventually(lambda: all(_state(api, "chaos_one", r) == "running" for r in held), 120, "50 running")
        busy = await _unmanaged_run_time(api, log)
    finally:
        log.open_gate()
    print(f"unmanaged run, trigger to success: {idle:.1f}s idle, {busy:.1f}s beside 50 running managed runs")
    for run_id in held:
        assert await _ended(api, "chaos_one", run_id, 300) == "success"
        _each_once(log, run_id, {"only"})


async def _unmanaged_run_time(api: AirflowRest, log: BodyLog) -> float:
    """Trigger `chaos_unmanaged`; seconds until it succeeded (a starved run would never start)."""
    started = time.monotonic()
    run_id = api.trigger("chaos_unmanaged", log.conf)
    assert await _ended(api, "chaos_unmanaged", run_id, 120) == "success"
    assert log.starts(run_id) == {"only": 1}
    return time.monotonic() - started


async def test_postgres_away_for_30s_while_a_task_finishes(
    api: AirflowRest, temporal: Client, stack: LocalStack, tmp_path: Path
) -> None:
    assert stack.postgres is not None
    log = BodyLog(tmp_path / "bodies")
    run_id = await _held_run(api, log)
    stack.postgres.stop()
    log.open_gate()  # the body returns now, with the metadata DB away
    await _eventually(lambda: log.ends(run_id)["held"] == 1, 30, "`held` to return")
    await asyncio.sleep(30)
    stack.postgres.start()
    await _succeeds_once_each(api, temporal, log, run_id)
    # Airflow's scheduler and dag-processor exit when the DB is away this long (a supervisor restarts
    # them); the run does not need them to finish or to converge.
    dead = {name for name, p in stack.processes.items() if p.poll() is not None}
    assert dead <= {"scheduler", "dag-processor"}, dead
    print("exited during the outage:", sorted(dead))


async def test_a_streamed_server_error_on_the_final_state_is_retried_not_raised() -> None:
    """The in-process Execution API answers a DB outage with a streamed 5xx; describing it for the retry
    log once raised `httpx.ResponseNotRead`, which ended the try without its state (and re-ran its body)."""
    from temporal_airflow.activities.execution_api import RecordingTransport
    from temporal_airflow.activities.execution_api import http as httpx

    answers = [httpx.Response(500, stream=httpx.ByteStream(b"db away")) for _ in range(2)]
    answers.append(httpx.Response(200, json={}))

    class Outage(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return answers.pop(0)

    transport = RecordingTransport(Outage(), state_retry_seconds=30)
    request = httpx.Request("PATCH", "http://api/task-instances/1/state", content=b'{"state": "success"}')
    assert transport.handle_request(request).status_code == 200
    assert transport.outcome.state == "success" and not answers
