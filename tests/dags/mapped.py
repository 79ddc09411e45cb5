from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def mapped():
    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return x * 2

    @task
    def total(values) -> int:
        return sum(values)

    total(double.expand(x=numbers()))


mapped()
