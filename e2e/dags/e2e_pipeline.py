"""Three tasks with XComs; `transform` is slow enough to be seen running."""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
    params={"seconds": 10},
)
def e2e_pipeline():
    @task
    def extract() -> list[int]:
        return [3, 4, 5]

    @task
    def transform(values: list[int], **context) -> int:
        time.sleep(float(context["params"]["seconds"]))
        return sum(v * v for v in values)

    @task
    def load(total: int) -> str:
        return f"loaded {total}"

    load(transform(extract()))


e2e_pipeline()
