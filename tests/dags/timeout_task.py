from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def timeout_task():
    @task(execution_timeout=timedelta(seconds=2))
    def too_slow() -> None:
        time.sleep(30)

    too_slow()


timeout_task()
