"""Deep integration vs stock Airflow: the same no-op chain, run by one Airflow deployment both ways.

    uv run python benchmarks/deep_vs_local_executor.py [--tasks 20] [--runs 3] [--concurrent 100]

Starts a local stack (PostgreSQL, Temporal, api-server, scheduler, dag-processor, workers) with two
copies of one DAG: ``chain_on_temporal`` (tagged ``temporal``, handed to Temporal by the orchestrator
plugin) and ``chain_on_airflow`` (run by Airflow's scheduler on the LocalExecutor). Each is triggered
through the REST API, after one warm-up run each; every figure comes from Airflow's own DagRun and
TaskInstance rows. Prints, per engine, the median over runs of: trigger to first task start, run wall
time (queued to end), and orchestration overhead per task ((wall - time inside tasks) / tasks).

Then, per engine: **UI freshness**, how long after a task instance's end (its ``end_date``, written as its
process reports the final state) the REST API first shows it finished (runs watched by polling the API
every 50 ms; p50 and p95 over every task of ``--runs`` runs); and **throughput**, ``--concurrent`` runs of
a 10-task chain triggered at once, wall time from the first trigger until every run has ended (all must
succeed). Last, the **backlog**: an Airflow-run 10-task chain's trigger → success, alone and then beside
``--backlog`` runs of a managed DAG left queued (its ``max_active_runs`` of 1 is held by a run that sleeps),
so the scheduler and the plugin see them on every loop. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.local_stack import LocalStack

DAG_TEMPLATE = """
import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="{dag_id}",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags={tags},
    max_active_runs={max_active_runs},
)
def chain():
    @task
    def noop(i: int) -> int:
        return i

    previous = None
    for i in range({tasks}):
        current = noop.override(task_id=f"noop_{{i:03d}}")(i)
        if previous is not None:
            previous >> current
        previous = current


chain()
"""
BACKLOG_DAG = """
import pendulum
from airflow.sdk import dag, task


@dag(dag_id="backlog_on_temporal", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     tags=["temporal"], max_active_runs=1)
def backlog():
    @task
    def hold() -> None:
        import time

        time.sleep(3600)

    hold()


backlog()
"""
ENGINES = {"chain_on_temporal": "temporal-airflow", "chain_on_airflow": "Airflow LocalExecutor"}
#: Per engine, the 10-task chain the throughput figure triggers ``--concurrent`` times at once.
TEN_TASKS = {"chain_on_temporal": "ten_on_temporal", "chain_on_airflow": "ten_on_airflow"}
_FINAL = ("success", "failed")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ended(api: AirflowRest, dag_id: str, run_id: str, deadline: float, every: float = 0.5) -> dict[str, Any]:
    while (run := api.run(dag_id, run_id))["state"] not in _FINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} did not finish")
        time.sleep(every)
    if run["state"] != "success":
        raise RuntimeError(f"{dag_id} run {run_id} ended {run['state']}")
    return run


def measure(api: AirflowRest, dag_id: str, tasks: int) -> dict[str, float]:
    run_id = api.trigger(dag_id)
    run = _ended(api, dag_id, run_id, time.monotonic() + 60 + 10 * tasks)
    tis = api.task_instances(dag_id, run_id).values()
    queued = _time(run["queued_at"])
    wall = (_time(run["end_date"]) - queued).total_seconds()
    in_tasks = sum(ti["duration"] or 0.0 for ti in tis)
    first_start = min(_time(ti["start_date"]) for ti in tis)
    return {
        "first_task_s": (first_start - queued).total_seconds(),
        "wall_s": wall,
        "overhead_per_task_ms": 1000 * (wall - in_tasks) / tasks,
    }


def freshness(api: AirflowRest, dag_id: str, tasks: int) -> list[float]:
    """Seconds from each task instance's end to the first REST answer that shows it finished."""
    run_id = api.trigger(dag_id)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 60 + 10 * tasks
    while len(seen) < tasks:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} did not finish")
        answers = api.task_instances(dag_id, run_id)
        now = time.time()
        for task_id, ti in answers.items():
            if ti["state"] in _FINAL and task_id not in seen:
                seen[task_id] = now - _time(ti["end_date"]).timestamp()
        time.sleep(0.05)
    _ended(api, dag_id, run_id, deadline)
    return list(seen.values())


def throughput(api: AirflowRest, dag_id: str, runs: int) -> float:
    """Seconds from the first of ``runs`` triggers until every run has succeeded."""
    started = time.monotonic()
    run_ids = [api.trigger(dag_id) for _ in range(runs)]
    deadline = started + 60 + 20 * runs
    for run_id in run_ids:
        _ended(api, dag_id, run_id, deadline, every=1.0)
    return time.monotonic() - started


def backlog(api: AirflowRest, managed: str, unmanaged: str, queued: int, runs: int) -> tuple[list[float], list[float]]:
    """Trigger → success of ``unmanaged`` (LocalExecutor) runs, before and while ``queued`` runs of the
    managed ``managed`` DAG wait in ``queued`` (its ``max_active_runs`` holds them back)."""

    def latency() -> float:
        run_id = api.trigger(unmanaged)
        run = _ended(api, unmanaged, run_id, time.monotonic() + 300, every=0.1)
        return (_time(run["end_date"]) - _time(run["queued_at"])).total_seconds()

    idle = [latency() for _ in range(runs)]
    for _ in range(queued):
        api.trigger(managed)
    waiting = int(api.request("GET", f"dags/{managed}/dagRuns?state=queued&limit=1")["total_entries"])
    print(f"{waiting} runs of {managed} queued", flush=True)
    if not waiting:
        raise RuntimeError(f"no run of {managed} is queued: the backlog figure would mean nothing")
    busy = [latency() for _ in range(runs)]
    return idle, busy


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=100, help="runs at once for the throughput figure")
    parser.add_argument(
        "--only",
        action="append",
        choices=["chain", "freshness", "throughput", "backlog"],
        help="just this figure (repeatable)",
    )
    parser.add_argument("--backlog", type=int, default=1000, help="managed runs left queued for the backlog figure")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="temporal-airflow-bench-"))
    dags = workdir / "dags"
    dags.mkdir()
    for dag_id in ENGINES:
        tags = ["temporal"] if dag_id == "chain_on_temporal" else []
        text = DAG_TEMPLATE.format(dag_id=dag_id, tags=tags, tasks=args.tasks, max_active_runs=16)
        (dags / f"{dag_id}.py").write_text(text)
        ten = TEN_TASKS[dag_id]
        text = DAG_TEMPLATE.format(dag_id=ten, tags=tags, tasks=10, max_active_runs=max(16, args.concurrent))
        (dags / f"{ten}.py").write_text(text)
    # The backlog: a managed DAG whose runs stay queued behind one that never ends.
    (dags / "backlog_on_temporal.py").write_text(BACKLOG_DAG)

    stack = LocalStack(workdir, dags)
    try:
        print("Starting PostgreSQL, Temporal, Airflow and the workers ...", flush=True)
        stack.start_services()
        stack.start_api_server()
        stack.start_scheduler()
        stack.start_dag_processor()
        stack.start_workers()
        api = AirflowRest(stack.api_url)
        only = set(args.only or ["chain", "freshness", "throughput", "backlog"])
        waits: tuple[list[float], list[float]] = ([], [])
        figures: dict[str, list[dict[str, float]]] = {dag_id: [] for dag_id in ENGINES}
        fresh: dict[str, list[float]] = {}
        walls: dict[str, float] = {}
        if only & {"chain", "freshness"}:
            for dag_id in ENGINES:
                measure(api, dag_id, args.tasks)  # warm-up: imports, connections, caches
        if "chain" in only:
            for _ in range(args.runs):
                for dag_id in ENGINES:
                    figures[dag_id].append(measure(api, dag_id, args.tasks))
        if "freshness" in only:
            for dag_id in ENGINES:
                fresh[dag_id] = [s for _ in range(args.runs) for s in freshness(api, dag_id, args.tasks)]
        if "throughput" in only:
            for dag_id, ten in TEN_TASKS.items():
                measure(api, ten, 10)  # warm-up of this DAG
                walls[dag_id] = throughput(api, ten, args.concurrent)
        if "backlog" in only:
            measure(api, "ten_on_airflow", 10)  # warm-up of the unmanaged DAG
            waits = backlog(api, "backlog_on_temporal", "ten_on_airflow", args.backlog, args.runs)
    finally:
        stack.stop()

    if "chain" in only:
        print(f"\n{args.tasks}-task no-op chain, median of {args.runs} runs after a warm-up, same deployment:\n")
        print(f"{'engine':<24}{'trigger→1st task (s)':>22}{'run wall (s)':>14}{'overhead/task (ms)':>20}")
        for dag_id, engine in ENGINES.items():
            median = {key: statistics.median(run[key] for run in figures[dag_id]) for key in figures[dag_id][0]}
            print(
                f"{engine:<24}{median['first_task_s']:>22.2f}{median['wall_s']:>14.2f}"
                f"{median['overhead_per_task_ms']:>20.0f}"
            )
    if "freshness" in only:
        print(f"\nUI freshness (task end → first REST answer showing it), every task of {args.runs} runs:\n")
        print(f"{'engine':<24}{'p50 (s)':>10}{'p95 (s)':>10}")
        for dag_id, engine in ENGINES.items():
            print(f"{engine:<24}{_percentile(fresh[dag_id], 0.5):>10.2f}{_percentile(fresh[dag_id], 0.95):>10.2f}")
    if "throughput" in only:
        print(f"\n{args.concurrent} runs of a 10-task chain triggered at once, until all succeeded:\n")
        print(f"{'engine':<24}{'wall (s)':>10}{'tasks/s':>9}")
        for dag_id, engine in ENGINES.items():
            print(f"{engine:<24}{walls[dag_id]:>10.0f}{10 * args.concurrent / walls[dag_id]:>9.1f}")
    if "backlog" in only:
        idle, busy = waits
        print(f"\nAirflow-run 10-task chain (LocalExecutor), trigger → success, {args.runs} runs each:\n")
        print(f"{'':<40}{'median (s)':>12}{'max (s)':>9}")
        for label, values in (("alone", idle), (f"beside {args.backlog} queued managed runs", busy)):
            print(f"{label:<40}{statistics.median(values):>12.2f}{max(values):>9.2f}")


if __name__ == "__main__":
    main()
