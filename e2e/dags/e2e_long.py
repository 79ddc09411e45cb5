"""A long task, to be cancelled from Airflow."""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["temporal"])
def e2e_long():
    @task
    def wait_forever() -> None:
        time.sleep(600)

    wait_forever()


e2e_long()
