"""Tagged `temporal`: a slow task, then two more; the tests mark task instances while it runs."""

from __future__ import annotations

import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


def _note(context: dict, what: str) -> None:
    with Path(context["params"]["counter"]).open("a") as fh:
        fh.write(f"{what}\n")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
    params={"seconds": 1, "counter": "/dev/null"},
)
def managed_marks():
    @task
    def slow(**context) -> None:
        _note(context, "slow started")
        time.sleep(float(context["params"]["seconds"]))
        _note(context, "slow finished")

    @task
    def after(**context) -> None:
        _note(context, "after")

    @task
    def last(**context) -> None:
        _note(context, "last")

    slow() >> after() >> last()


managed_marks()
