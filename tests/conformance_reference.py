"""Run several DAGs with Airflow's own ``dag.test()``, one after the other, in one process.

Invoked as ``python conformance_reference.py LOGICAL_DATE DAG_FILE DAG_ID [DAG_FILE DAG_ID ...]`` with AIRFLOW_HOME
pointing at a migrated metadata DB; prints one line ``RESULT {json}`` per DAG (its id, the run state
and every task's state, or the error that stopped ``dag.test()``).
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime

from airflow.dag_processing.dagbag import DagBag
from airflow_reference import task_states


def run_one(dag_file: str, dag_id: str, logical_date: datetime) -> dict[str, object]:
    dag = DagBag(dag_folder=dag_file).dags[dag_id]
    run = dag.test(logical_date=logical_date)
    return {"dag_id": dag_id, "state": str(run.state), "tasks": task_states(run)}


def main() -> None:
    logical_date = datetime.fromisoformat(sys.argv[1])
    args = sys.argv[2:]
    for dag_file, dag_id in zip(args[::2], args[1::2], strict=True):
        try:
            result = run_one(dag_file, dag_id, logical_date)
        except Exception:
            result = {"dag_id": dag_id, "error": traceback.format_exc()[-2000:]}
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
