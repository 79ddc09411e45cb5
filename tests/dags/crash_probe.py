"""A task that records each start and end, to see what a killed worker does to it."""

from __future__ import annotations

import os
import time

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def crash_probe():
    @task
    def long_step(**context) -> str:
        marker = context["dag_run"].conf["marker"]
        with open(marker, "a") as fh:
            fh.write(f"start {os.getpid()}\n")
        time.sleep(float(context["dag_run"].conf["seconds"]))
        with open(marker, "a") as fh:
            fh.write(f"end {os.getpid()}\n")
        return "survived"

    @task
    def after(value: str) -> str:
        return value + " and continued"

    after(long_step())


crash_probe()
