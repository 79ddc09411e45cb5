"""Tagged `temporal`: `quick` and `slow` in parallel, then `joined`; the test clears `quick` while `slow` runs."""

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
def managed_clear():
    @task
    def quick(**context) -> None:
        _note(context, "quick")

    @task
    def slow(**context) -> None:
        _note(context, "slow started")
        time.sleep(float(context["params"]["seconds"]))
        _note(context, "slow finished")

    @task
    def joined(**context) -> None:
        _note(context, "joined")

    [quick(), slow()] >> joined()


managed_clear()
