"""Run a DAG with Airflow's own ``dag.test()`` (the reference our workflow must agree with).

Invoked as ``python airflow_reference.py DAG_FILE [CONF_JSON]`` with AIRFLOW_HOME pointing at a migrated
metadata DB; prints one line ``RESULT {json}`` with the run state and every task's state.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session


def task_states(run: Any) -> dict[str, str | None]:
    """task_id (with [map_index] for mapped tasks) -> final state of a finished ``dag.test()`` run."""
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): (
                None if ti.state is None else str(ti.state)
            )
            for ti in tis
        }


def main() -> None:
    bag = DagBag(dag_folder=sys.argv[1])
    (dag,) = bag.dags.values()
    conf = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    run = dag.test(run_conf=conf)
    print("RESULT " + json.dumps({"state": str(run.state), "tasks": task_states(run)}), flush=True)


if __name__ == "__main__":
    main()
