"""A flaky task that fails on its first try and succeeds on the retry."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["example", "temporal"])
def example_flaky_retry():
    @task(retries=2, retry_delay=timedelta(seconds=2))
    def flaky(**context) -> int:
        try_number = context["ti"].try_number
        if try_number < 2:
            raise ConnectionError(f"upstream service unavailable on try {try_number}")
        return try_number

    @task
    def report(tries: int) -> str:
        return f"succeeded after {tries} tries"

    report(flaky())


example_flaky_retry()
