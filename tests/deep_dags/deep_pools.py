"""Tasks in Airflow pools: `pooled` shares a one-slot pool across runs; `pool_missing` names no pool;
`one_per_dag` allows one active try of its task across runs (`max_active_tis_per_dag`)."""

from __future__ import annotations

import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _hold(context: dict) -> None:
    """Hold for 2 s, writing ``start``/``end`` lines with the time to the ``log`` param's file."""
    log = Path(context["params"]["log"])
    with log.open("a") as fh:
        fh.write(f"start {time.time()}\n")
    time.sleep(2)
    with log.open("a") as fh:
        fh.write(f"end {time.time()}\n")


@dag(schedule=None, start_date=START, catchup=False, params={"log": "/dev/null"}, max_active_runs=4)
def deep_pooled():
    @task(pool="deep_one_slot")
    def hold(n: int, **context) -> None:
        _hold(context)

    hold.expand(n=[1, 2])


@dag(schedule=None, start_date=START, catchup=False, params={"log": "/dev/null"}, max_active_runs=4)
def deep_one_per_dag():
    """Its task runs one try at a time across all runs of the DAG (``max_active_tis_per_dag=1``)."""

    @task(max_active_tis_per_dag=1)
    def hold(**context) -> None:
        _hold(context)

    hold()


@dag(schedule=None, start_date=START, catchup=False)
def deep_pool_missing():
    @task(pool="deep_no_such_pool")
    def nowhere() -> None:
        return None

    nowhere()


deep_pooled()
deep_pool_missing()
deep_one_per_dag()
