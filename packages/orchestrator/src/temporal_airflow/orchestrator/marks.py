"""Task instances a user marks in Airflow's UI or REST API, carried to the run's workflow.

Marking a task success, failed or skipped writes the row in Airflow's DB, in the API server's process;
a workflow running that DagRun keeps its own copy and would otherwise run the task anyway (or keep
running it) and write its own outcome over the user's. Airflow calls its task-instance listeners for
such a mark (``previous_state=None``, with the ORM task instance); for a run recorded as Temporal's the
listener queues the mark in a small table of the plugin's own, ``temporal_airflow_task_mark``. The
bridge, in the scheduler, signals each queued mark to the run's workflow at its next pass (one query,
every ``action_interval``: half a second),
then deletes it; marks of runs that are no longer running are dropped, there is nothing to tell.

A table rather than a Temporal call from the API server: the mark survives a Temporal outage and an
API server without a Temporal client, and reaches the workflow once the bridge can.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow.models.base import StringID
from sqlalchemy import Column, Integer, MetaData, Table, delete, insert, select

from temporal_airflow.orchestrator.ids import RunRef
from temporal_airflow.orchestrator.managed import RUNS

log = logging.getLogger(__name__)

MARKS = Table(
    "temporal_airflow_task_mark",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", StringID(), nullable=False),
    Column("run_id", StringID(), nullable=False),
    Column("task_id", StringID(), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("state", StringID(), nullable=False),
)


@dataclass(frozen=True)
class QueuedMark:
    """A mark waiting for the bridge; ``run`` is ``None`` when its DagRun is no longer running."""

    id: int
    run: RunRef | None
    task_id: str
    map_index: int
    state: str


def record_mark(task_instance: Any, state: str) -> None:
    """Queue a user's mark of ``task_instance`` if its run is Temporal's (listener side, own transaction:
    the mark itself is already committed)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        managed = session.scalar(
            select(RUNS.c.managed)
            .join(DagRun, DagRun.id == RUNS.c.dag_run_id)
            .where(
                DagRun.dag_id == task_instance.dag_id,
                DagRun.run_id == task_instance.run_id,
                RUNS.c.run_id == DagRun.run_id,
            )
        )
        if not managed:
            return
        session.execute(
            insert(MARKS).values(
                dag_id=task_instance.dag_id,
                run_id=task_instance.run_id,
                task_id=task_instance.task_id,
                map_index=task_instance.map_index,
                state=state,
            )
        )
    log.info(
        "Mark %s of %s/%s/%s queued for Temporal",
        state,
        task_instance.dag_id,
        task_instance.run_id,
        task_instance.task_id,
    )


def queued_marks() -> list[QueuedMark]:
    """Every queued mark, oldest first, with its run's current clear number if it is still running."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    query = (
        select(MARKS, DagRun.state.label("run_state"), DagRun.clear_number)
        .outerjoin(DagRun, (DagRun.dag_id == MARKS.c.dag_id) & (DagRun.run_id == MARKS.c.run_id))
        .order_by(MARKS.c.id)
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return [
        QueuedMark(
            id=row.id,
            run=RunRef(row.dag_id, row.run_id, int(row.clear_number or 0))
            if row.run_state == DagRunState.RUNNING
            else None,
            task_id=row.task_id,
            map_index=row.map_index,
            state=row.state,
        )
        for row in rows
    ]


def any_queued() -> bool:
    """Whether any mark is queued (one cheap query)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(MARKS.c.id).limit(1)) is not None


def forget_marks(ids: list[int]) -> None:
    """Delete marks that were delivered (or had nowhere to go)."""
    from airflow.utils.session import create_session

    if ids:
        with create_session() as session:
            session.execute(delete(MARKS).where(MARKS.c.id.in_(ids)))
