"""Tagged `temporal`: a task mapped over runtime values, then one mapped over its outputs, then a total."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["temporal"])
def managed_mapped():
    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(value: int) -> int:
        return value * 2

    @task
    def plus_one(value: int) -> int:
        return value + 1

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(plus_one.expand(value=double.expand(value=numbers())))


managed_mapped()
