"""Tagged `temporal`: every run of this DAG goes to Temporal."""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
    params={"seconds": 1},
)
def managed_chain():
    @task
    def first() -> int:
        return 1

    @task
    def second(value: int, **context) -> int:
        time.sleep(float(context["params"]["seconds"]))
        return value + 1

    @task
    def third(value: int) -> int:
        return value + 1

    third(second(first()))


managed_chain()
