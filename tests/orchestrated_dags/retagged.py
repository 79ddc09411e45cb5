"""Two DAGs whose `temporal` tag a test flips mid-run: a run keeps the executor decided when it started.

`retagged_to_airflow` starts tagged (Temporal), `retagged_to_temporal` untagged (Airflow); both swap once
the file `$AIRFLOW_HOME/retagged.flipped` exists and the DAG file is parsed again. Each task appends its
id to the file named by the `counter` param, so a test can count how often each task body ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

FLIPPED = Path(os.environ.get("AIRFLOW_HOME", "/nonexistent")) / "retagged.flipped"


def _count(context: dict[str, Any]) -> None:
    with open(context["params"]["counter"], "a") as counter:
        counter.write(f"{context['ti'].task_id}\n")


def retagged(dag_id: str, managed_at_first: bool) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        tags=["temporal"] if managed_at_first != FLIPPED.exists() else [],
        params={"counter": "/dev/null", "seconds": 1},
    )
    def build() -> None:
        @task
        def first(**context: Any) -> None:
            _count(context)

        @task
        def slow(**context: Any) -> None:
            time.sleep(float(context["params"]["seconds"]))
            _count(context)

        @task
        def last(**context: Any) -> None:
            _count(context)

        first() >> slow() >> last()

    build()


retagged("retagged_to_airflow", managed_at_first=True)
retagged("retagged_to_temporal", managed_at_first=False)
