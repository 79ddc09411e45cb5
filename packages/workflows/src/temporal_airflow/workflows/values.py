"""The values a DAG run hands its workflow: which task instance, which try, what a turn decided.

They are plain, immutable and free of Airflow, so the driver, the waits and the run's own modules
share them without importing Airflow's ORM. They never travel as workflow input or output (the wire
types are :mod:`temporal_airflow.models`); a try's activity id (:meth:`TaskKey.activity_id`) is part
of the workflow's commands, so its format must not change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class TaskKey:
    """Identifies a task instance within the run."""

    task_id: str
    map_index: int = -1

    def activity_id(self, try_number: int) -> str:
        return f"{self.label}#try{try_number}"

    @property
    def label(self) -> str:
        """``extract`` or ``transform[3]``: how the task instance reads in logs and the Temporal UI."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass(frozen=True)
class ReadyTask:
    """A task instance Airflow says may start now."""

    key: TaskKey
    try_number: int
    max_tries: int


@dataclass(frozen=True)
class Turn:
    """What one scheduling turn decided: tasks to start, and whether any state changed without one."""

    ready: list[ReadyTask]
    progressed: bool
