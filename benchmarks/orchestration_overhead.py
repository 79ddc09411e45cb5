"""Per-task orchestration overhead of a chain of no-op tasks: temporal-airflow vs Airflow's dag.test().

    uv run python benchmarks/orchestration_overhead.py [--tasks 50]

Prints, for each engine, the wall time of the whole run, the time spent inside tasks, and the
overhead per task ((wall - in-task) / tasks). Not a test: figures depend on the machine.
Runs on an embedded Temporal dev server with in-process workers, and Airflow's dag.test() on a
SQLite metadata DB; both execute every task through Airflow's own task runner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

DAG_TEMPLATE = """
import pendulum
from airflow.sdk import dag, task

@dag(dag_id="noop_chain", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def noop_chain():
    @task
    def noop(i: int) -> None:
        return None

    previous = None
    for i in range({tasks}):
        current = noop.override(task_id=f"noop_{{i:03d}}")(i)
        if previous is not None:
            previous >> current
        previous = current

noop_chain()
"""

REFERENCE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session
dag = DagBag(dag_folder=sys.argv[1]).dags["noop_chain"]
started = time.monotonic()
run = dag.test()
wall = time.monotonic() - started
with create_session() as s:
    tis = run.get_task_instances(session=s)
    in_task = sum(ti.duration or 0 for ti in tis)
    print("RESULT " + json.dumps({"wall": wall, "in_task": in_task, "state": str(run.state)}))
"""


async def temporal_run(dag_file: Path) -> dict[str, float | str]:
    from temporal_airflow.activities.task_host_client import warm_up
    from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
    from temporal_airflow.cli.dev_server import DevServer
    from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.workflows.worker import create_workflow_worker

    with DevServer() as server:
        await asyncio.sleep(0.5)
        client = await connect_client(server.address)
        await warm_up()
        async with (
            create_workflow_worker(client, "bench-wf"),
            create_activity_worker(client, "bench-act"),
            create_service_worker(client, "bench-act"),
        ):
            # Warm-up run so both engines are measured with imports done.
            for measured in (False, True):
                started = time.monotonic()
                result = await client.execute_workflow(
                    STANDALONE_WORKFLOW,
                    DagExecutionInput(dag_path=str(dag_file), activity_task_queue="bench-act"),
                    id=f"bench-{uuid.uuid4().hex[:8]}",
                    task_queue="bench-wf",
                    result_type=DagExecutionResult,
                )
                wall = time.monotonic() - started
                if measured:
                    in_task = sum(
                        (t.end_date - t.start_date).total_seconds() for t in result.tasks if t.start_date and t.end_date
                    )
                    return {"wall": wall, "in_task": in_task, "state": result.state}
    raise AssertionError("unreachable")


def airflow_dag_test(dag_file: Path) -> dict[str, float | str]:
    home = tempfile.mkdtemp(prefix="bench-airflow-")
    env = dict(
        os.environ,
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dag_file.parent),
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run([sys.executable, "-c", REFERENCE, str(dag_file)], env=env, capture_output=True, text=True)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TEMPORAL_AIRFLOW_TASK_LOG_LEVEL", "INFO")
    workdir = Path(tempfile.mkdtemp(prefix="bench-dags-"))
    dag_file = workdir / "noop_chain.py"
    dag_file.write_text(DAG_TEMPLATE.format(tasks=args.tasks))

    rows = {
        "temporal-airflow (standalone workflow)": asyncio.run(temporal_run(dag_file)),
        "stock Airflow dag.test()": airflow_dag_test(dag_file),
    }
    print(f"\n{args.tasks}-task no-op chain")
    print(f"{'engine':<42}{'state':>9}{'wall s':>10}{'in-task s':>11}{'overhead/task ms':>18}")
    for name, row in rows.items():
        overhead = (float(row["wall"]) - float(row["in_task"])) / args.tasks * 1000
        print(f"{name:<42}{row['state']:>9}{float(row['wall']):>10.2f}{float(row['in_task']):>11.2f}{overhead:>18.1f}")


if __name__ == "__main__":
    main()
