"""No `temporal` tag: runs on Airflow's own executor, untouched by the plugin."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def unmanaged():
    @task
    def on_airflow_executor() -> str:
        return "ran on LocalExecutor"

    on_airflow_executor()


unmanaged()
