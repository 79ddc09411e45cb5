"""Reconciliation at scale: the bridge's pass with 100, 1,000, 10,000 running managed runs.

    uv run python benchmarks/reconcile_scale.py [--runs 100 1000 10000] [--passes 5] [--concurrency 50]

Why: in deep mode the orchestrator plugin's bridge reconciles Airflow and Temporal every few seconds
(``TemporalBridge.reconcile_once``): one DB query for the running managed DagRuns, one visibility query
(``list_workflows``, paged) for the running deep workflows, and per-run work only where the two disagree.
A pass has to stay cheap, with a bounded number of calls, however many runs are in flight; this script
measures it on the real components, no mocks.

How: it starts PostgreSQL (Airflow's schema migrated) and a Temporal dev server with
:class:`~temporal_airflow.cli.local_stack.LocalStack` (no scheduler, no workers), creates the plugin's
tables, then for each ``--runs`` size (cumulatively) inserts running DagRuns of one managed DAG with the
plugin's record that they are managed (bulk inserts), and starts as many *running* deep workflows, as the
bridge starts them (workflow type, id, memo), on a task queue no worker polls, so they stay running and
cost nothing. Once visibility counts them all, it times ``--passes`` reconciliation passes of a real
``TemporalBridge`` and prints, per size: pass time (median, max, per 1,000 runs), the two reads'
shares, the Temporal RPCs and DB statements per pass, and the per-run work a pass did (none expected:
Airflow and Temporal agree, so nothing is started, cancelled or signalled; exits non-zero otherwise).
Everything it started is stopped on exit, Ctrl-C or SIGTERM. Not a test: times depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from temporal_airflow.cli.local_stack import LocalStack
from temporal_airflow.cli.processes import ShutdownSignals

DAG_ID = "reconcile_scale"
DAG_FILE = f"""
import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["temporal"])
def reconcile_scale():
    @task
    def noop() -> None:
        return None

    noop()


reconcile_scale()
"""
#: No worker polls this queue: the workflows started on it stay running without costing anything.
QUEUE = "reconcile-scale-no-worker"


@dataclass
class Meter:
    """What the bridge did during one pass: Temporal RPCs by name, DB statements, per-run work, read times."""

    rpcs: Counter[str] = field(default_factory=Counter)
    statements: int = 0
    per_run: int = 0
    db_seconds: float = 0.0
    visibility_seconds: float = 0.0
    list_rpc_seconds: float = 0.0

    def reset(self) -> None:
        self.rpcs.clear()
        self.statements = self.per_run = 0
        self.db_seconds = self.visibility_seconds = self.list_rpc_seconds = 0.0


@dataclass
class Size:
    runs: int
    pass_seconds: list[float]
    db_seconds: list[float]
    visibility_seconds: list[float]
    list_rpc_seconds: list[float]
    rpcs: Counter[str]
    statements: int
    per_run: int
    setup_seconds: float
    load: float


def instrument(bridge: Any, client: Any, meter: Meter) -> None:
    """Count the client's RPCs (each page of a listing is one), the DB's statements and the bridge's
    per-run work, and time the pass's two reads; the real calls run unchanged."""
    from airflow import settings
    from sqlalchemy import event

    from temporal_airflow.orchestrator import airflow_db

    service = client.service_client
    rpc_call = service._rpc_call

    async def counted_rpc(rpc: str, *args: Any, **kwargs: Any) -> Any:
        meter.rpcs[rpc] += 1
        started = time.perf_counter()
        try:
            return await rpc_call(rpc, *args, **kwargs)
        finally:
            if rpc == "list_workflow_executions":
                meter.list_rpc_seconds += time.perf_counter() - started

    setattr(service, "_rpc_call", counted_rpc)  # noqa: B010 - shadows the method on this client only

    def count_statement(*_: Any) -> None:
        meter.statements += 1

    event.listen(settings.get_engine(), "before_cursor_execute", count_statement)

    isolated = bridge._isolated

    async def counted_isolated(run: Any, work: Awaitable[None]) -> None:
        meter.per_run += 1
        await isolated(run, work)

    setattr(bridge, "_isolated", counted_isolated)  # noqa: B010

    running_managed_runs = airflow_db.running_managed_runs

    def timed_runs() -> Any:
        started = time.perf_counter()
        try:
            return running_managed_runs()
        finally:
            meter.db_seconds += time.perf_counter() - started

    setattr(airflow_db, "running_managed_runs", timed_runs)  # noqa: B010 - the bridge looks it up there

    running_workflows = bridge._running_workflows

    async def timed_workflows() -> Any:
        started = time.perf_counter()
        try:
            return await running_workflows()
        finally:
            meter.visibility_seconds += time.perf_counter() - started

    setattr(bridge, "_running_workflows", timed_workflows)  # noqa: B010


def add_runs(first: int, last: int) -> list[Any]:
    """Insert running DagRuns ``first`` .. ``last - 1`` of the managed DAG, recorded as Temporal's."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import exists, insert, literal, select

    from temporal_airflow.orchestrator.ids import RunRef
    from temporal_airflow.orchestrator.managed import RUNS

    now = datetime.now(UTC)
    refs = [RunRef(DAG_ID, f"manual__scale_{i:06d}") for i in range(first, last)]
    rows = [
        {
            "dag_id": ref.dag_id,
            "run_id": ref.run_id,
            "state": "running",
            "run_type": "manual",
            "queued_at": now,
            "start_date": now,
            "run_after": now,
            "conf": {},
        }
        for ref in refs
    ]
    with create_session() as session:
        session.execute(insert(DagRun.__table__), rows)
        # The record the scheduler writes when a run goes running (managed.ManagedRuns.decide), in bulk.
        unrecorded = select(DagRun.id, DagRun.dag_id, DagRun.run_id, literal(True)).where(
            DagRun.dag_id == DAG_ID, ~exists().where(RUNS.c.dag_run_id == DagRun.id)
        )
        session.execute(insert(RUNS).from_select(["dag_run_id", "dag_id", "run_id", "managed"], unrecorded))
    return refs


async def start_workflows(client: Any, settings: Any, refs: list[Any], concurrency: int) -> None:
    """Start each run's deep workflow as the bridge does (type, id, memo), ``concurrency`` at a time."""
    from temporal_airflow.models import DEEP_WORKFLOW, DeepDagExecutionInput

    gate = asyncio.Semaphore(concurrency)

    async def start(ref: Any) -> None:
        async with gate:
            await client.start_workflow(
                DEEP_WORKFLOW,
                DeepDagExecutionInput(
                    dag_id=ref.dag_id, run_id=ref.run_id, activity_task_queue=settings.activity_task_queue
                ),
                id=ref.workflow_id,
                task_queue=settings.workflow_task_queue,
                memo={"dag_id": ref.dag_id, "run_id": ref.run_id, "clear_number": ref.clear_number},
            )

    await asyncio.gather(*(start(ref) for ref in refs))


async def wait_visible(client: Any, runs: int, timeout: float = 600) -> None:
    """Visibility is eventually consistent: wait until it counts every running workflow."""
    from temporal_airflow.models import DEEP_WORKFLOW

    query = f"WorkflowType = '{DEEP_WORKFLOW}' AND ExecutionStatus = 'Running' AND TaskQueue = '{QUEUE}'"
    deadline = time.monotonic() + timeout
    while (seen := (await client.count_workflows(query)).count) < runs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"visibility counts {seen} of {runs} running workflows after {timeout}s")
        await asyncio.sleep(1)


async def measure(address: str, sizes: list[int], passes: int, concurrency: int) -> list[Size]:
    from temporal_airflow.orchestrator.bridge import TemporalBridge
    from temporal_airflow.orchestrator.config import TemporalSettings
    from temporal_airflow.orchestrator.managed import create_table
    from temporal_airflow.orchestrator.marks import MARKS

    create_table()  # what the scheduler does when it starts with the plugin
    create_table(MARKS)
    settings = TemporalSettings(address=address, workflow_task_queue=QUEUE)
    bridge = TemporalBridge(settings)  # its thread is not started: the passes run in this loop
    client = await bridge._get_client()
    meter = Meter()
    instrument(bridge, client, meter)
    results: list[Size] = []
    have = 0
    for runs in sizes:
        started = time.monotonic()
        print(f"{runs:,} runs: adding {runs - have:,} DagRuns and workflows ...", flush=True)
        refs = await asyncio.to_thread(add_runs, have, runs)
        await start_workflows(client, settings, refs, concurrency)
        await wait_visible(client, runs)
        have = runs
        setup = time.monotonic() - started
        size = Size(runs, [], [], [], [], Counter(), 0, 0, setup, os.getloadavg()[0])
        for _ in range(passes):
            meter.reset()
            began = time.perf_counter()
            await bridge.reconcile_once()
            size.pass_seconds.append(time.perf_counter() - began)
            size.db_seconds.append(meter.db_seconds)
            size.visibility_seconds.append(meter.visibility_seconds)
            size.list_rpc_seconds.append(meter.list_rpc_seconds)
            size.rpcs = max(size.rpcs, Counter(meter.rpcs), key=lambda c: c.total())
            size.statements = max(size.statements, meter.statements)
            size.per_run += meter.per_run
        results.append(size)
        print(
            f"  ready in {setup:.0f}s; passes (ms): " + ", ".join(f"{1000 * s:.0f}" for s in size.pass_seconds),
            flush=True,
        )
    return results


def _ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds)


def report(results: list[Size], passes: int) -> bool:
    """Print the table; True if every pass was in agreement (nothing started, cancelled or signalled)."""
    print(f"\nReconciliation pass, {passes} passes per size (ms, medians unless said; counts per pass):\n")
    print(
        f"{'runs':>7}{'pass':>7}{'max':>7}{'per 1k':>8}{'DB read':>9}{'listing':>9}{'its RPCs':>10}"
        f"{'RPCs':>6}{'pages':>7}{'DB stmts':>10}{'per-run work':>14}{'load':>6}"
    )
    agreed = True
    for size in results:
        median = _ms(size.pass_seconds)
        others = sum(n for rpc, n in size.rpcs.items() if rpc != "list_workflow_executions")
        agreed = agreed and not size.per_run and not others
        print(
            f"{size.runs:>7,}{median:>7.0f}{1000 * max(size.pass_seconds):>7.0f}{median * 1000 / size.runs:>8.0f}"
            f"{_ms(size.db_seconds):>9.0f}{_ms(size.visibility_seconds):>9.0f}{_ms(size.list_rpc_seconds):>10.0f}"
            f"{size.rpcs.total():>6}"
            f"{size.rpcs['list_workflow_executions']:>7}{size.statements:>10}{size.per_run:>14}{size.load:>6.1f}"
        )
    print(
        "\npass: reconcile_once(), of which DB read (running_managed_runs) and listing (_running_workflows: the"
        "\nvisibility query's pages and the memos), of which its RPCs (list_workflow_executions, server and"
        "\ntransport). RPCs: every Temporal call of a pass; pages: the listing's; DB stmts: statements sent to"
        "\nPostgreSQL; per-run work: runs a pass started, signalled or cancelled, all passes (0 at steady state);"
        "\nload: 1-minute load average before the passes."
    )
    if not agreed:
        print("A pass at steady state did per-run work or made other RPCs than listing:", file=sys.stderr)
        for size in results:
            print(f"  {size.runs:,} runs: RPCs {dict(size.rpcs)}, per-run work {size.per_run}", file=sys.stderr)
    return agreed


def _interrupt() -> NoReturn:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50, help="workflow starts in flight at once")
    args = parser.parse_args()

    signals = ShutdownSignals(_interrupt, sys.stderr).install()
    workdir = Path(tempfile.mkdtemp(prefix="temporal-airflow-reconcile-"))
    dags = workdir / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG_FILE)
    stack = LocalStack(workdir, dags)
    try:
        print("Starting PostgreSQL and Temporal, migrating Airflow's DB ...", flush=True)
        stack.start_services()
        assert stack.temporal is not None
        os.environ.update(stack.env())  # Airflow's settings in this process, before it first imports airflow
        results = asyncio.run(measure(stack.temporal.address, sorted(set(args.runs)), args.passes, args.concurrency))
    except KeyboardInterrupt:
        sys.exit(128 + (signals.received or signal.SIGINT))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if not report(results, args.passes):
        sys.exit(1)


if __name__ == "__main__":
    main()
