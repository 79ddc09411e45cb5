"""Runs on its own from its timetable."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=timedelta(hours=1),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
    max_active_runs=1,
)
def e2e_scheduled():
    @task
    def tick(**context) -> str:
        return context["run_id"]

    tick()


e2e_scheduled()
