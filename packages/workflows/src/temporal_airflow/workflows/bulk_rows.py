"""Task-instance rows in bulk for the in-workflow DB, a bounded number per workflow activation.

Building Airflow's ``TaskInstance`` ORM objects costs ~0.2 ms each (and Airflow's own expansion ~0.5 ms
per index): thousands of them in one workflow activation would pass Temporal's 2 s deadlock deadline.
So large expansions and restores write rows with plain SQL inserts (copies of the row Airflow made for
the unmapped task instance, one per index) and turn them into ORM objects at most
:data:`ROWS_PER_ACTIVATION` at a time, each batch in its own activation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.models.taskinstance import TaskInstance
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from temporal_airflow.workflows import airflow_compat

#: Rows created or loaded per workflow activation (well under the 2 s deadline on a busy 2-core box).
ROWS_PER_ACTIVATION = 250

_TI = TaskInstance.__table__


def clone_indexes(session: Session, template_id: Any, indexes: Iterable[int]) -> list[Any]:
    """Insert copies of the task instance ``template_id`` for ``indexes``; returns the new rows' ids."""
    template = dict(session.execute(select(_TI).where(_TI.c.id == template_id)).mappings().one())
    # Ids never leave the workflow (commands name tasks by id and index), so random ones are fine.
    column = airflow_compat.map_index_column()
    rows = [dict(template, id=uuid.uuid4(), **{column: index}) for index in indexes]
    if rows:
        session.execute(insert(_TI), rows)
    return [row["id"] for row in rows]


def renumber(session: Session, ti_id: Any, map_index: int) -> None:
    """Give the unmapped task instance its first index, as Airflow's expansion does."""
    session.execute(update(_TI).where(_TI.c.id == ti_id).values({airflow_compat.map_index_column(): map_index}))


def load(session: Session, ids: Sequence[Any]) -> list[TaskInstance]:
    """The ORM objects of the rows ``ids``."""
    return list(session.scalars(select(TaskInstance).where(TaskInstance.id.in_(list(ids)))).all())


def unmapped_id(session: Session, dag_id: str, run_id: str, task_id: str) -> Any:
    """The id of ``task_id``'s unmapped row (``map_index`` -1), if it has one."""
    return session.scalar(
        select(TaskInstance.id).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == -1,
        )
    )


def row_ids(session: Session, dag_id: str, run_id: str) -> set[Any]:
    """The ids of the run's current rows (an ORM query: from 3.4 Airflow leaves out archived tries)."""
    query = select(TaskInstance.id).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    return set(session.scalars(query).all())
