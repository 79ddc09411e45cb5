"""A chain long enough to make a deep run continue as new (the test server suggests it early)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, max_active_tasks=4)
def deep_long_chain():
    @task
    def step(previous: int | None = None) -> int:
        return (previous or 0) + 1

    value = step.override(task_id="step_00")()
    for i in range(1, 30):
        value = step.override(task_id=f"step_{i:02d}")(value)


deep_long_chain()
