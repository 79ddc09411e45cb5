"""Tasks in standalone pools (sizes from TEMPORAL_AIRFLOW_POOLS, set by tests/test_standalone_pools.py).

Each try of ``hold`` writes ``start``/``end`` lines with the time to the file named by the ``log`` param,
so a test can tell whether two tries ever held the pool at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
PARAMS = {"log": "/dev/null", "seconds": 1}


def _pooled(dag_id: str, pool: str, pool_slots: int = 1, tries: int = 1, per_dag: int | None = None) -> None:
    @dag(dag_id=dag_id, schedule=None, start_date=START, catchup=False, params=PARAMS)
    def pooled() -> None:
        @task(pool=pool, pool_slots=pool_slots, max_active_tis_per_dag=per_dag)
        def hold(n: int, **context) -> None:
            log = Path(context["params"]["log"])
            with log.open("a") as fh:
                fh.write(f"start {time.time()} {n}\n")
            time.sleep(float(context["params"]["seconds"]))
            with log.open("a") as fh:
                fh.write(f"end {time.time()} {n}\n")

        hold.expand(n=list(range(tries)))

    pooled()


_pooled("pool_one_slot", "standalone_one", tries=2)
_pooled("pool_cancelled", "standalone_cancelled")
_pooled("pool_terminated", "standalone_terminated")
_pooled("pool_continued", "standalone_continued")
_pooled("pool_too_small", "standalone_one", pool_slots=2)
_pooled("pool_not_configured", "standalone_nowhere")
_pooled("pool_task_limit", "default_pool", per_dag=1)  # one try at a time across runs, no pool
