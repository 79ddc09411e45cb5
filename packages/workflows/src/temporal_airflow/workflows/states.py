"""Airflow's task-instance states as the DAG run groups them, and reading a state from the wire.

One place for "which states count as finished, in flight, started, markable, active", so that the
run's frontier, admission, outcomes and row loading agree; and :func:`task_state`, which refuses a
state Airflow does not know instead of guessing.
"""

from __future__ import annotations

from airflow.models.taskinstance import TaskInstance
from airflow.utils.state import TaskInstanceState

FINISHED = frozenset(
    {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
)
#: States a try in flight can be in; a run carried into a new execution re-runs none of them.
IN_FLIGHT = frozenset({TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED, TaskInstanceState.RUNNING})
#: States of a try that started and has not ended; a cancelled run fails them.
STARTED = frozenset(
    {
        TaskInstanceState.QUEUED,
        TaskInstanceState.RUNNING,
        TaskInstanceState.DEFERRED,
        TaskInstanceState.UP_FOR_RESCHEDULE,
    }
)
#: States a user may give a task instance from Airflow's UI or REST API.
MARKABLE = frozenset({TaskInstanceState.SUCCESS, TaskInstanceState.FAILED, TaskInstanceState.SKIPPED})
#: States of a try that counts against its task's ``max_active_tis_per_dag(run)``, as Airflow counts them.
ACTIVE = frozenset({TaskInstanceState.QUEUED, TaskInstanceState.RUNNING, TaskInstanceState.DEFERRED})


class InvalidTaskState(ValueError):
    """A task outcome named a state Airflow does not know."""


def task_state(value: str) -> TaskInstanceState:
    """Airflow's state for ``value``; an unknown state is an error, never a silent guess."""
    try:
        return TaskInstanceState(value)
    except ValueError:
        raise InvalidTaskState(f"unknown task state {value!r}") from None


def state_text(ti: TaskInstance) -> str | None:
    return None if ti.state is None else str(ti.state)
