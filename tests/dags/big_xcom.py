from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def big_xcom():
    @task(retries=3)
    def huge() -> str:
        return "x" * (2 * 1024 * 1024)

    huge()


big_xcom()
