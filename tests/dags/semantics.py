"""Run-level semantics: priority order under short capacity, per-task limits, DAG callbacks, dagrun_timeout.

Callbacks append ``reason run_id task_id`` to the file named by the run's ``conf["marker"]``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

START = datetime(2024, 1, 1)


def record(context) -> None:
    """A DAG callback: note why it ran, for which run, and the task instance it was given."""
    with open(context["dag_run"].conf["marker"], "a") as marker:
        marker.write(f"{context['reason']} {context['run_id']} {context['ti'].task_id}\n")


@task
def noop() -> None:
    """Does nothing."""


@task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


with DAG("priority_order", schedule=None, start_date=START, max_active_tasks=1):
    for name, weight in (("low", 1), ("mid", 5), ("high", 10)):
        noop.override(task_id=name, priority_weight=weight, weight_rule="absolute")()


with DAG("per_run_limit", schedule=None, start_date=START):
    sleep.override(task_id="one_at_a_time", max_active_tis_per_dagrun=1).expand(seconds=[0.5, 0.5, 0.5])
    sleep.override(task_id="free")(0.5)


with DAG("callbacks", schedule=None, start_date=START, on_success_callback=record, on_failure_callback=record):
    noop.override(task_id="first")() >> noop.override(task_id="last")()


with DAG(
    "run_timeout",
    schedule=None,
    start_date=START,
    dagrun_timeout=timedelta(seconds=6),
    on_failure_callback=record,
):
    sleep.override(task_id="slow")(120) >> noop.override(task_id="after")()
