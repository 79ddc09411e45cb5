"""Tasks that log when they start and end to a file named in conf, for concurrency/heartbeat tests."""

from __future__ import annotations

import os
import time

import pendulum
from airflow.sdk import dag, task


def _record(path: str, what: str, name: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{what} {name} {os.getpid()} {time.time()}\n")


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), max_active_tasks=2)
def slow_tasks():
    @task
    def sleeper(index: int, **context) -> int:
        path = context["dag_run"].conf["marker"]
        _record(path, "start", f"sleeper{index}")
        time.sleep(float(context["dag_run"].conf["seconds"]))
        _record(path, "end", f"sleeper{index}")
        return index

    for i in range(int(os.environ.get("SLOW_TASKS_COUNT", "4"))):
        sleeper.override(task_id=f"sleeper_{i}")(i)


slow_tasks()
