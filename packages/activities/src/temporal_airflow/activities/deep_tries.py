"""Deep mode: a try's row in Airflow's DB, queued for that try before it runs.

Two steps put a Temporal-run try in Airflow's ``queued`` state, as the scheduler does before it hands a
task to an executor: taking its pool slots (:mod:`.pool_activities`) and starting its task process
(:mod:`.execution_clients`). Both queue the row the same way, here: a new try number first records the
previous try in ``TaskInstanceHistory`` (Airflow's ``prepare_db_for_next_try``), so the UI keeps every
try; queuing the same try twice (a retried activity) changes nothing but the queued time.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from temporal_airflow.activities.mapped_rows import MissingTaskInstance, task_instance_row
from temporal_airflow.models import ActivityTaskInput


def task_instance(session: Any, task: ActivityTaskInput) -> Any:
    """The TaskInstance row of ``task`` in Airflow's DB (``None`` when there is none, even after
    expanding its mapped task there)."""
    try:
        return task_instance_row(session, task.run.dag_id, task.run.run_id, task.task_id, task.map_index)
    except MissingTaskInstance:
        return None


def queue_try(ti: Any, task: ActivityTaskInput, session: Any, hostname: str | None = None) -> None:
    """Make ``ti`` the ``queued`` row of ``task``'s try (``hostname``: the worker that will run it)."""
    from airflow.utils.state import TaskInstanceState

    if ti.try_number < task.try_number and ti.state is not None and ti.try_number > 0:
        ti.prepare_db_for_next_try(session)  # keeps the previous try in TaskInstanceHistory
    ti.try_number = task.try_number
    ti.state = TaskInstanceState.QUEUED
    ti.queued_dttm = datetime.now(UTC)
    ti.hostname = hostname or socket.getfqdn()
