"""Small DAGs for the chaos tests (`tests/test_chaos.py`), all but `chaos_unmanaged` tagged `temporal`.

Every task body appends `start {run_id} {task_id} {pid}` to the file named by the `counter` param when
it begins and `end {run_id} {task_id}` when it returns, so a test counts how often each body ran and
which process ran it. The task named by the `hold` param waits, after its `start` line, until the file
`{counter}.gate` exists: a test breaks something while the body runs, then lets it return.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

_COMMON: dict[str, Any] = {
    "schedule": None,
    "start_date": pendulum.datetime(2024, 1, 1, tz="UTC"),
    "catchup": False,
    "tags": ["temporal"],
    "max_active_runs": 200,
}
_PARAMS = {"counter": "/dev/null", "hold": ""}


def _note(counter: str, line: str) -> None:
    with open(counter, "a") as fh:
        fh.write(line + "\n")


def _body(context: dict[str, Any]) -> str:
    params, ti = context["params"], context["ti"]
    run_id, task_id, counter = context["run_id"], ti.task_id, params["counter"]
    _note(counter, f"start {run_id} {task_id} {os.getpid()}")
    if params["hold"] == task_id:
        gate = Path(f"{counter}.gate")
        deadline = time.monotonic() + 600
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    _note(counter, f"end {run_id} {task_id}")
    return task_id


@task
def body(**context: Any) -> str:
    return _body(context)


@dag(**_COMMON, params=_PARAMS)
def chaos_chain() -> None:
    """first -> held (by default) -> last."""
    body.override(task_id="first")() >> body.override(task_id="held")() >> body.override(task_id="last")()


@dag(**_COMMON, params=_PARAMS)
def chaos_wide() -> None:
    """Five tasks: one, three in parallel, one."""
    fan = [body.override(task_id=f"middle_{i}")() for i in range(3)]
    body.override(task_id="begin")() >> fan >> body.override(task_id="end")()


@dag(**_COMMON, params=_PARAMS)
def chaos_one() -> None:
    body.override(task_id="only")()


@dag(**{**_COMMON, "tags": []}, params=_PARAMS)
def chaos_unmanaged() -> None:
    """Not tagged `temporal`: Airflow's scheduler and LocalExecutor run it."""
    body.override(task_id="only")()


@dag(**_COMMON, params={"count": Param(1, type="integer", minimum=0)})
def chaos_params() -> None:
    @task
    def use(**context: Any) -> int:
        return int(context["params"]["count"])

    use()


chaos_chain()
chaos_wide()
chaos_one()
chaos_params()
chaos_unmanaged()
