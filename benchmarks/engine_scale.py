"""The engine at scale: big runs' history per execution, turn cost, replay time, next to dag.test().

    uv run python benchmarks/engine_scale.py [--chain 1000] [--fanout 10000] [--mode standalone|deep|both]
        [--only chain|fanout] [--skip-dag-test]
    uv run python benchmarks/engine_scale.py --mode dag-test    # Airflow's dag.test() and turn costs only

For a chain of ``--chain`` no-op tasks and a mapped fan-out of ``--fanout`` indexes (plus its producer
and a reducer), each run through the standalone workflow (an embedded Temporal dev server, workers in
this process) and/or the deep workflow (a local Airflow deployment: Postgres, api-server, an activity
worker process), prints: wall time, executions (continue-as-new), and for each execution its history's
events and bytes and its failed or timed-out workflow tasks (Temporal warns at 10,240 events / 10 MB;
the deadlock detector fails a workflow task that holds the thread 2 s), the time a full replay of the
largest execution takes, and Airflow's ``dag.test()`` wall time on the same DAG. Finally the cost of one
scheduling turn (the workflow's in-memory Airflow DagRun, outside Temporal) at the fan-out's size: the
longest activation (expansion or a batch of rows) and the median steady turn. Exits non-zero when a run
did not succeed or an execution broke a limit. Not a test: times depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

DAGS = """
import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")

@dag(dag_id="scale_chain", schedule=None, start_date=START, max_active_tasks=16)
def scale_chain():
    @task
    def step(i: int) -> None:
        return None

    previous = None
    for i in range({chain}):
        current = step.override(task_id=f"step_{{i:05d}}")(i)
        if previous is not None:
            previous >> current
        previous = current

@dag(dag_id="scale_fanout", schedule=None, start_date=START, max_active_tasks=16)
def scale_fanout():
    @task
    def produce() -> list[int]:
        return list(range({fanout}))

    @task
    def work(x: int) -> int:
        return x

    @task
    def reduce(values: list[int]) -> int:
        return sum(values)

    reduce(work.expand(x=produce()))

scale_chain()
scale_fanout()
"""

REFERENCE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags[sys.argv[2]]
started = time.monotonic()
run = dag.test()
print("RESULT " + json.dumps({"wall": time.monotonic() - started, "state": str(run.state)}))
"""


#: As `temporal-airflow run` and the orchestrator start the workflows.
WORKFLOW_TASK_TIMEOUT = timedelta(minutes=1)
#: Temporal's warning thresholds for one execution's history.
EVENT_LIMIT = 10_240
BYTES_LIMIT = 10 * 1024 * 1024


@dataclass
class Execution:
    """One execution (continue-as-new ends it) of a run's workflow: history size and failed workflow tasks."""

    events: int
    bytes: int
    task_failures: int
    task_timeouts: int

    @property
    def healthy(self) -> bool:
        return self.events < EVENT_LIMIT and self.bytes < BYTES_LIMIT and not self.task_failures + self.task_timeouts


@dataclass
class BigRun:
    mode: str
    dag_id: str
    state: str
    wall: float
    executions: list[Execution]
    replay_seconds: float


async def measure(client: Any, mode: str, dag_id: str, start: Callable[[], Awaitable[Any]]) -> BigRun:
    """Start a run, wait for it, then read every execution's history and replay the largest."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.worker import Replayer

    from temporal_airflow.workflows import airflow_compat, local_run
    from temporal_airflow.workflows.plugin import WORKFLOWS

    started = time.monotonic()
    handle = await start()
    result = await handle.result()
    wall = time.monotonic() - started
    executions, histories = [], []
    run_id: str | None = handle.first_execution_run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        histories.append(history)
        types = [event.event_type for event in history.events]
        executions.append(
            Execution(
                events=len(history.events),
                bytes=len(history.to_json().encode()),
                task_failures=types.count(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED),
                task_timeouts=types.count(EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT),
            )
        )
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    airflow_compat.install()
    local_run.warm_up()  # Airflow's first scheduling turn costs seconds: not in a replayed workflow task
    largest = max(histories, key=lambda h: len(h.events))
    replay_started = time.monotonic()
    await Replayer(workflows=WORKFLOWS, data_converter=client.data_converter).replay_workflow(largest)
    return BigRun(mode, dag_id, result.state, wall, executions, time.monotonic() - replay_started)


async def standalone_runs(dag_file: Path, dag_ids: list[str]) -> list[BigRun]:
    """The standalone workflow on an embedded dev server, workflow and activity workers in this process."""
    from temporal_airflow.activities.task_host_client import warm_up
    from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
    from temporal_airflow.cli.dev_server import DevServer
    from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.workflows.worker import create_workflow_worker

    runs = []
    with DevServer() as server:
        client = await connect_client(server.address)
        await warm_up()
        async with (
            create_workflow_worker(client, "scale-wf"),
            create_activity_worker(client, "scale-act"),
            create_service_worker(client, "scale-act"),
        ):
            for dag_id in dag_ids:
                start = partial(
                    client.start_workflow,
                    STANDALONE_WORKFLOW,
                    DagExecutionInput(dag_path=str(dag_file), dag_id=dag_id, activity_task_queue="scale-act"),
                    id=f"scale-{dag_id}-{uuid.uuid4().hex[:6]}",
                    task_queue="scale-wf",
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                    result_type=DagExecutionResult,
                )
                runs.append(await measure(client, "standalone", dag_id, start))
    return runs


async def deep_runs(dag_file: Path, dag_ids: list[str]) -> list[BigRun]:
    """The deep workflow against a local Airflow deployment (Postgres, migrated DB, DAGs serialized,
    api-server for the tasks' Execution API, an activity worker process), the workflow worker here."""
    from temporal_airflow.cli.local_stack import LocalStack
    from temporal_airflow.models import DEEP_WORKFLOW, DagExecutionResult, DeepDagExecutionInput
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.workflows.worker import create_workflow_worker

    stack = LocalStack(Path(tempfile.mkdtemp(prefix="scale-deep-")), dag_file.parent)
    runs = []
    try:
        stack.start_services()
        stack.start_api_server()
        stack.start_activity_worker("scale-deep-act")
        assert stack.temporal is not None
        client = await connect_client(stack.temporal.address)
        async with create_workflow_worker(client, "scale-deep-wf"):
            for dag_id in dag_ids:
                start = partial(
                    client.start_workflow,
                    DEEP_WORKFLOW,
                    DeepDagExecutionInput(dag_id=dag_id, activity_task_queue="scale-deep-act"),
                    id=f"scale-deep-{dag_id}-{uuid.uuid4().hex[:6]}",
                    task_queue="scale-deep-wf",
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                    result_type=DagExecutionResult,
                )
                runs.append(await measure(client, "deep", dag_id, start))
    finally:
        stack.stop()
    return runs


def dag_test(dag_file: Path, dag_id: str) -> float:
    home = tempfile.mkdtemp(prefix="scale-airflow-")
    env = dict(
        os.environ,
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dag_file.parent),
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(dag_file), dag_id], env=env, capture_output=True, text=True
    )
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return float(json.loads(line[len("RESULT ") :])["wall"])


def turn_costs(dag_file: Path, fanout: int) -> tuple[int, float, float]:
    """Seconds of the longest activation (an expansion turn or a batch of rows) and of the median steady
    turn of the fan-out, outside Temporal."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    from temporal_airflow.models import TaskExecutionResult, XComEntry
    from temporal_airflow.workflows.local_run import LocalDagRun

    dag = DagBag(dag_folder=str(dag_file), safe_mode=False).dags["scale_fanout"]
    now = datetime(2024, 1, 2, tzinfo=UTC)
    local = LocalDagRun(
        DagSerialization.to_dict(dag), run_id="bench", run_type="manual", logical_date=now, run_after=now, conf={}
    )
    timings: list[float] = []
    catch_ups: list[float] = []
    tasks = 0
    while not local.finished and len(timings) < 400:
        if local.catching_up:
            started = time.perf_counter()
            local.catch_up()
            catch_ups.append(time.perf_counter() - started)
            continue
        started = time.perf_counter()
        turn = local.ready_tasks(16)
        timings.append(time.perf_counter() - started)
        for ready in turn.ready:
            local.mark_running(ready.key, now)
            xcoms = []
            if ready.key.task_id == "produce":
                xcoms = [XComEntry("produce", "return_value", "[]", mapped_length=fanout)]
            local.record_result(
                TaskExecutionResult(
                    task_id=ready.key.task_id,
                    map_index=ready.key.map_index,
                    state="success",
                    try_number=ready.try_number,
                    start_date=now,
                    end_date=now,
                    xcoms=xcoms,
                )
            )
        tasks = max(tasks, len(local.states()))
    expansion = max(timings + catch_ups)
    return tasks, expansion, statistics.median(timings[3:] or timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--skip-dag-test", action="store_true", help="do not run Airflow's dag.test() baseline")
    parser.add_argument(
        "--mode",
        choices=["standalone", "deep", "both", "dag-test"],
        default="standalone",
        help="which workflow runs the DAGs (dag-test: only Airflow's dag.test() and the turn costs)",
    )
    parser.add_argument("--only", action="append", choices=["chain", "fanout"], help="run just this DAG (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # As under Airflow, a task may be mapped over at most [core] max_map_length values (1,024 by default).
    os.environ.setdefault("AIRFLOW__CORE__MAX_MAP_LENGTH", str(max(1024, args.fanout)))
    os.environ.setdefault("TEMPORAL_AIRFLOW_PAYLOAD_STORAGE", tempfile.mkdtemp(prefix="scale-payloads-"))
    workdir = Path(tempfile.mkdtemp(prefix="scale-dags-"))
    dag_file = workdir / "scale.py"
    dag_file.write_text(DAGS.format(chain=args.chain, fanout=args.fanout))

    dag_ids = [f"scale_{name}" for name in args.only or ["chain", "fanout"]]
    runs: list[BigRun] = []
    if args.mode in ("standalone", "both"):
        runs += asyncio.run(standalone_runs(dag_file, dag_ids))
    if args.mode in ("deep", "both"):
        runs += asyncio.run(deep_runs(dag_file, dag_ids))
    reference = not args.skip_dag_test or args.mode == "dag-test"
    baseline = {dag_id: dag_test(dag_file, dag_id) for dag_id in dag_ids} if reference else {}
    print(f"\nchain of {args.chain} tasks, fan-out of {args.fanout} mapped indexes")
    header = f"{'mode':<11}{'dag':<14}{'state':>9}{'wall s':>9}{'dag.test s':>12}{'executions':>12}"
    print(header + f"{'max events':>12}{'max MB':>9}{'replay s':>10}")
    if not runs:
        print("\n".join(f"{dag_id:<14} dag.test {wall:.1f} s" for dag_id, wall in baseline.items()))
    for run in runs:
        ref = baseline.get(run.dag_id)
        most_events = max(e.events for e in run.executions)
        most_bytes = max(e.bytes for e in run.executions) / 1e6
        ref_text = f"{ref:>12.1f}" if ref is not None else f"{'-':>12}"
        print(
            f"{run.mode:<11}{run.dag_id:<14}{run.state:>9}{run.wall:>9.1f}{ref_text}{len(run.executions):>12}"
            f"{most_events:>12}{most_bytes:>9.2f}{run.replay_seconds:>10.2f}"
        )
    print(f"\nper execution (limits: {EVENT_LIMIT} events, {BYTES_LIMIT / 1e6:.1f} MB, no failed workflow task)")
    print(f"{'mode':<11}{'dag':<14}{'#':>3}{'events':>8}{'MB':>7}{'wft failed':>12}{'wft timed out':>15}")
    for run in runs:
        for number, e in enumerate(run.executions, 1):
            print(
                f"{run.mode:<11}{run.dag_id:<14}{number:>3}{e.events:>8}{e.bytes / 1e6:>7.2f}"
                f"{e.task_failures:>12}{e.task_timeouts:>15}"
            )
    if "scale_fanout" in dag_ids:
        tasks, expansion, steady = turn_costs(dag_file, args.fanout)
        print(
            f"\nscheduling turn at {tasks} task instances: longest activation {expansion * 1e3:.0f} ms, "
            f"steady turn {steady * 1e3:.1f} ms"
        )
    healthy = [run.state == "success" and all(e.healthy for e in run.executions) for run in runs]
    unhealthy = [f"{run.mode} {run.dag_id}" for run, ok in zip(runs, healthy, strict=True) if not ok]
    if unhealthy:
        sys.exit(f"unhealthy runs: {', '.join(unhealthy)}")


if __name__ == "__main__":
    main()
