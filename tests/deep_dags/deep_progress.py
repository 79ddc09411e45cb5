"""A run slow enough to watch from the REST API, with XComs passed through Airflow's DB."""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, params={"seconds": 8})
def deep_progress():
    @task
    def extract() -> dict:
        return {"rows": 3, "source": "db"}

    @task
    def slow(data: dict, **context) -> int:
        time.sleep(float(context["params"]["seconds"]))
        return data["rows"] * 10

    @task
    def finish(total: int, **context) -> str:
        source = context["ti"].xcom_pull(task_ids="extract")["source"]
        return f"{total} from {source}"

    finish(slow(extract()))


deep_progress()
