"""A Deadline alert an hour after the logical date; conf `fail` makes the run fail."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference


async def _alert(**kwargs) -> None:
    print("deadline missed", kwargs)


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"fail": False},
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=timedelta(hours=1),
        callback=AsyncCallback(_alert),
    ),
)
def deep_deadline():
    @task
    def work(**context) -> None:
        if context["params"]["fail"]:
            raise RuntimeError("asked to fail")

    work()


deep_deadline()
