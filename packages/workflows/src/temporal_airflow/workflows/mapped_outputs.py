"""What Airflow's mapped-task expansion reads of a finished try: its mapped length and return markers.

A task mapped over another's output expands to as many indexes as that output has items (a *mapped
length*), and one mapped over a mapped task's outputs to as many as it returned values. The workflow
never holds the values (they stay with the activities, or in the payload store), only these facts, in
the run's DB where Airflow's expansion looks for them. Where depends on the release, chosen by the
door (:func:`temporal_airflow.workflows.airflow_compat.task_map_in_xcom`):

- up to 3.3 (:class:`TaskMapTable`): a ``task_map`` row per length, and an XCom row (value ``None``)
  per return value of a mapped index, keyed by run, task and index;
- from 3.4 (:class:`XComMappedLength`): the try's own return-value XCom row carries ``mapped_length``,
  keyed by the task instance's id (so a carried row is marked when it is loaded, not before).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XCOM_RETURN_KEY
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from temporal_airflow.models import TaskSummary, XComEntry
from temporal_airflow.workflows import airflow_compat

#: (task_id, map_index, mapped_length, returned) for the rows an earlier execution's tries left.
Marker = tuple[str, int, int | None, bool]


def markers(tasks: Iterable[TaskSummary]) -> set[Marker]:
    """What an earlier execution's tries left for Airflow's expansion to read."""
    return {
        (s.task_id, s.map_index, x.mapped_length, x.key == XCOM_RETURN_KEY)
        for s in tasks
        for x in s.xcoms
        if x.mapped_length is not None or x.key == XCOM_RETURN_KEY
    }


class MappedOutputs(Protocol):
    def record(self, session: Session, run: Any, ti: TaskInstance, xcoms: Iterable[XComEntry], when: Any) -> None:
        """One try's outputs, as it finished."""

    def restore(self, session: Session, run: Any, tasks: list[TaskSummary]) -> None:
        """An earlier execution's outputs, before their rows are loaded."""

    def restore_row(self, session: Session, run: Any, ti: TaskInstance, summary: TaskSummary) -> None:
        """An earlier execution's outputs of one task instance, as its row is loaded."""


class TaskMapTable:
    """Airflow up to 3.3: lengths in ``task_map``, return markers in the XCom table."""

    def __init__(self) -> None:
        taskmap = importlib.import_module("airflow.models.taskmap")
        xcom = importlib.import_module("airflow.models.xcom")
        self._task_map: Any = taskmap.TaskMap
        self._xcom: Any = xcom.XComModel

    def _task_map_row(self, run: Any, task_id: str, map_index: int, length: int) -> dict[str, Any]:
        return dict(
            dag_id=run.dag_id, task_id=task_id, run_id=run.run_id, map_index=map_index, length=length, keys=None
        )

    def _marker_row(self, run: Any, task_id: str, map_index: int, when: datetime | None) -> dict[str, Any]:
        return dict(
            dag_run_id=run.id,
            task_id=task_id,
            map_index=map_index,
            key=XCOM_RETURN_KEY,
            dag_id=run.dag_id,
            run_id=run.run_id,
            value=None,
            timestamp=when or run.start_date,
        )

    def record(self, session: Session, run: Any, ti: TaskInstance, xcoms: Iterable[XComEntry], when: Any) -> None:
        for entry in xcoms:
            if entry.mapped_length is not None:
                session.merge(self._task_map(**self._task_map_row(run, ti.task_id, ti.map_index, entry.mapped_length)))
            if entry.key == XCOM_RETURN_KEY and ti.map_index >= 0:
                session.merge(self._xcom(**self._marker_row(run, ti.task_id, ti.map_index, when)))

    def restore(self, session: Session, run: Any, tasks: list[TaskSummary]) -> None:
        maps: dict[tuple[str, int], dict[str, Any]] = {}
        xcoms: dict[tuple[str, int], dict[str, Any]] = {}
        for task_id, map_index, length, returned in markers(tasks):
            if length is not None:
                maps[task_id, map_index] = self._task_map_row(run, task_id, map_index, length)
            if returned and map_index >= 0:
                xcoms[task_id, map_index] = self._marker_row(run, task_id, map_index, None)
        if maps:
            session.execute(insert(self._task_map.__table__), list(maps.values()))
        if xcoms:
            session.execute(insert(self._xcom.__table__), list(xcoms.values()))

    def restore_row(self, session: Session, run: Any, ti: TaskInstance, summary: TaskSummary) -> None:
        return None  # written in bulk by restore


class XComMappedLength:
    """Airflow 3.4 on: the try's return-value XCom row, keyed by its task instance, holds the length."""

    def __init__(self) -> None:
        xcom = importlib.import_module("airflow.models.xcom")
        self._xcom: Any = xcom.XComModelV2

    def record(self, session: Session, run: Any, ti: TaskInstance, xcoms: Iterable[XComEntry], when: Any) -> None:
        for entry in xcoms:
            if entry.mapped_length is None and not (entry.key == XCOM_RETURN_KEY and ti.map_index >= 0):
                continue
            row = session.scalar(
                select(self._xcom).where(self._xcom.task_instance_id == ti.id, self._xcom.key == XCOM_RETURN_KEY)
            )
            if row is None:
                row = self._xcom(task_instance_id=ti.id, key=XCOM_RETURN_KEY, value=None)
                session.add(row)
            row.timestamp = when or run.start_date
            row.mapped_length = entry.mapped_length if entry.mapped_length is not None else row.mapped_length

    def restore(self, session: Session, run: Any, tasks: list[TaskSummary]) -> None:
        return None  # written row by row by restore_row: the rows need their task instance's id

    def restore_row(self, session: Session, run: Any, ti: TaskInstance, summary: TaskSummary) -> None:
        self.record(session, run, ti, summary.xcoms, summary.end_date)


def for_this_airflow() -> MappedOutputs:
    """The writer this Airflow's expansion reads (see the module docstring)."""
    return XComMappedLength() if airflow_compat.task_map_in_xcom() else TaskMapTable()
