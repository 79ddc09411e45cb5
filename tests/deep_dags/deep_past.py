"""`gate` depends on its previous run's success (`depends_on_past`); conf `fail` makes it fail."""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"fail": False, "log": "/dev/null"},
    default_args={"retries": 0},
)
def deep_past():
    @task(depends_on_past=True)
    def gate(**context) -> None:
        with Path(context["params"]["log"]).open("a") as fh:
            fh.write(f"{context['run_id']}\n")
        if context["params"]["fail"]:
            raise RuntimeError("asked to fail")

    @task
    def after() -> None:
        return None

    gate() >> after()


deep_past()
