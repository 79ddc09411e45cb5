"""Tagged `temporal`: a task that waits (for a release file, or a long time) and records its start, its end and
its operator's ``on_kill`` with timestamps, then a downstream task; the tests act on it while it waits."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import BaseOperator, dag


def note(path: str, what: str) -> None:
    with Path(path).open("a") as fh:
        fh.write(f"{what} {time.time():.3f} {os.getpid()}\n")


class WaitingOperator(BaseOperator):
    """Appends 'start', waits for ``{{ params.release }}`` to exist (or ``params.seconds``), appends 'end'.
    ``on_kill`` appends 'killed' and stops the wait, as a real operator's ``on_kill`` stops its work."""

    template_fields = ("record", "release", "seconds")

    def __init__(self, record: str, release: str, seconds: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record, self.release, self.seconds = record, release, seconds
        self._killed = False

    def execute(self, context: Any) -> None:
        try_number = context["ti"].try_number
        note(self.record, f"start{try_number}")
        deadline = time.monotonic() + float(self.seconds)
        while not Path(self.release).exists() and time.monotonic() < deadline:
            if self._killed:
                raise RuntimeError("killed")
            time.sleep(0.1)
        note(self.record, f"end{try_number}")

    def on_kill(self) -> None:
        note(self.record, "killed")
        self._killed = True


class AfterOperator(BaseOperator):
    template_fields = ("record",)

    def __init__(self, record: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record = record

    def execute(self, context: Any) -> None:
        note(self.record, "after")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
    params={"log": "/dev/null", "release": "/nonexistent", "seconds": 600},
)
def managed_kill():
    waiting = WaitingOperator(
        task_id="waiting", record="{{ params.log }}", release="{{ params.release }}", seconds="{{ params.seconds }}"
    )
    waiting >> AfterOperator(task_id="after", record="{{ params.log }}")


managed_kill()
