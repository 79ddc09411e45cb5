"""Deep integration vs stock Airflow: the same no-op chain, run by one Airflow deployment both ways.

    uv run python benchmarks/deep_vs_local_executor.py [--tasks 20] [--runs 3]

Starts a local stack (PostgreSQL, Temporal, api-server, scheduler, dag-processor, workers) with two
copies of one DAG: ``chain_on_temporal`` (tagged ``temporal``, handed to Temporal by the orchestrator
plugin) and ``chain_on_airflow`` (run by Airflow's scheduler on the LocalExecutor). Each is triggered
through the REST API, after one warm-up run each; every figure comes from Airflow's own DagRun and
TaskInstance rows. Prints, per engine, the median over runs of: trigger to first task start, run wall
time (queued to end), and orchestration overhead per task ((wall - time inside tasks) / tasks).
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.local_stack import LocalStack

DAG_TEMPLATE = """
import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags={tags})
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
ENGINES = {"chain_on_temporal": "temporal-airflow", "chain_on_airflow": "Airflow LocalExecutor"}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def measure(api: AirflowRest, dag_id: str, tasks: int) -> dict[str, float]:
    run_id = api.trigger(dag_id)
    deadline = time.monotonic() + 60 + 10 * tasks
    while (run := api.run(dag_id, run_id))["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} did not finish")
        time.sleep(0.5)
    if run["state"] != "success":
        raise RuntimeError(f"{dag_id} run {run_id} ended {run['state']}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="temporal-airflow-bench-"))
    dags = workdir / "dags"
    dags.mkdir()
    for dag_id in ENGINES:
        tags = ["temporal"] if dag_id == "chain_on_temporal" else []
        (dags / f"{dag_id}.py").write_text(DAG_TEMPLATE.format(dag_id=dag_id, tags=tags, tasks=args.tasks))

    stack = LocalStack(workdir, dags)
    try:
        print("Starting PostgreSQL, Temporal, Airflow and the workers ...", flush=True)
        stack.start_services()
        stack.start_api_server()
        stack.start_scheduler()
        stack.start_dag_processor()
        stack.start_workers()
        api = AirflowRest(stack.api_url)
        figures: dict[str, list[dict[str, float]]] = {dag_id: [] for dag_id in ENGINES}
        for dag_id in ENGINES:
            measure(api, dag_id, args.tasks)  # warm-up: imports, connections, caches
        for _ in range(args.runs):
            for dag_id in ENGINES:
                figures[dag_id].append(measure(api, dag_id, args.tasks))
    finally:
        stack.stop()

    print(f"\n{args.tasks}-task no-op chain, median of {args.runs} runs after a warm-up, same deployment:\n")
    print(f"{'engine':<24}{'trigger→1st task (s)':>22}{'run wall (s)':>14}{'overhead/task (ms)':>20}")
    for dag_id, engine in ENGINES.items():
        median = {key: statistics.median(run[key] for run in figures[dag_id]) for key in figures[dag_id][0]}
        print(
            f"{engine:<24}{median['first_task_s']:>22.2f}{median['wall_s']:>14.2f}"
            f"{median['overhead_per_task_ms']:>20.0f}"
        )


if __name__ == "__main__":
    main()
