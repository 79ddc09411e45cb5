"""A task that fails: the run ends failed and the error is in the task's log."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["temporal"])
def e2e_failing():
    @task
    def prepare() -> str:
        return "ready"

    @task
    def explode(_: str) -> None:
        raise ValueError("e2e boom: the warehouse rejected the load")

    explode(prepare())


e2e_failing()
