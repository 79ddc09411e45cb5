"""Waiting task instances as Airflow records them, in the in-workflow DB.

A reschedule-mode sensor between two pokes is ``up_for_reschedule`` with one ``TaskReschedule`` row per
poke, as Airflow's Execution API writes them: Airflow's own ``ReadyToRescheduleDep`` then holds it back
until the latest row's ``reschedule_date``, and the first row's start is where the sensor's ``timeout``
counts from. A new try starts without rows (Airflow deletes them when a try ends up for retry).

A deferred task is ``deferred`` with ``next_method``, ``next_kwargs`` and ``trigger_timeout`` on its row.
The workflow runs no triggerer and keeps no ``Trigger`` rows, so the trigger itself (classpath, kwargs)
is kept here. When the trigger's event arrives, it goes into ``next_kwargs`` as Airflow's
``handle_event_submit`` puts it; a timeout or a failed trigger resumes the task through ``__fail__``, as
Airflow's scheduler and triggerer do, so the task fails with Airflow's own errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from airflow.models.taskinstance import TaskInstance
from airflow.models.taskreschedule import TaskReschedule
from airflow.models.trigger import TRIGGER_FAIL_REPR
from airflow.utils.state import TaskInstanceState
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from temporal_airflow.models import Deferral, Reschedule, TaskExecutionResult, TaskSummary, TriggerOutcome


class WaitRecords:
    """The reschedule rows and deferrals of one run's task instances."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._deferrals: dict[uuid.UUID, Deferral] = {}
        #: Task instances this run wrote reschedule rows for: every other try starts without a query.
        self._rescheduled: set[uuid.UUID] = set()

    def record(self, ti: TaskInstance, result: TaskExecutionResult) -> None:
        """What a try's outcome leaves behind (``ti.state`` is already the outcome's state)."""
        if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE and result.reschedule_date is not None:
            self._session.add(TaskReschedule(ti.id, result.start_date, result.end_date, result.reschedule_date))
            self._rescheduled.add(ti.id)
        elif ti.state == TaskInstanceState.UP_FOR_RETRY:
            self._session.execute(delete(TaskReschedule).where(TaskReschedule.ti_id == ti.id))
        if ti.state == TaskInstanceState.DEFERRED and result.deferral is not None:
            self._defer(ti, result.deferral)
        else:
            self._forget_deferral(ti)
            ti.next_method = ti.next_kwargs = None  # no later try may resume with them

    def restore(self, ti: TaskInstance, summary: TaskSummary) -> None:
        """Take over a waiting task instance from an earlier execution's snapshot."""
        reschedule = summary.reschedule
        if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE and reschedule is not None:
            # One row per earlier poke, as Airflow counts them; only the first row's start (the timeout's
            # origin) and the last row's reschedule date are ever read back.
            first, due = reschedule.first_start_date, reschedule.reschedule_date
            self._session.add_all(TaskReschedule(ti.id, first, first, due) for _ in range(reschedule.count))
            self._rescheduled.add(ti.id)
        if ti.state == TaskInstanceState.DEFERRED and summary.deferral is not None:
            self._defer(ti, summary.deferral)

    def reschedule(self, ti: TaskInstance) -> Reschedule | None:
        """The try's pokes so far, if it was rescheduled at all."""
        if ti.id not in self._rescheduled:
            return None
        first_id, last_id, count = self._session.execute(
            select(func.min(TaskReschedule.id), func.max(TaskReschedule.id), func.count()).where(
                TaskReschedule.ti_id == ti.id
            )
        ).one()
        if not count:
            return None
        first, last = self._session.get_one(TaskReschedule, first_id), self._session.get_one(TaskReschedule, last_id)
        return Reschedule(reschedule_date=last.reschedule_date, first_start_date=first.start_date, count=count)

    def next_poke_at(self, tis: Iterable[TaskInstance]) -> datetime | None:
        """Earliest moment a sensor waiting in ``up_for_reschedule`` may poke again."""
        waiting = [ti.id for ti in tis if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE]
        if not waiting:
            return None
        latest = select(func.max(TaskReschedule.id)).where(TaskReschedule.ti_id.in_(waiting))
        due = select(func.min(TaskReschedule.reschedule_date)).where(
            TaskReschedule.id.in_(latest.group_by(TaskReschedule.ti_id))
        )
        return self._session.scalar(due)

    def deferral(self, ti: TaskInstance) -> Deferral | None:
        """What a deferred task instance waits for."""
        return self._deferrals.get(ti.id) if ti.state == TaskInstanceState.DEFERRED else None

    def resume(self, ti: TaskInstance, outcome: TriggerOutcome, when: datetime) -> bool:
        """Wake a deferred task instance; ``True`` when it must run again (queued), ``False`` when the
        trigger's event ended it."""
        self._forget_deferral(ti)
        if outcome.task_state is not None:
            ti.state = TaskInstanceState(outcome.task_state)
            ti.end_date = when
            return False
        if outcome.failure is not None:
            ti.next_method = TRIGGER_FAIL_REPR
            ti.next_kwargs = {"error": outcome.failure, "traceback": outcome.traceback}
        else:
            ti.next_kwargs = {**(ti.next_kwargs or {}), "event": outcome.payload}
        ti.state = TaskInstanceState.QUEUED
        return True

    def _defer(self, ti: TaskInstance, deferral: Deferral) -> None:
        self._deferrals[ti.id] = deferral
        ti.next_method = deferral.next_method
        ti.next_kwargs = deferral.next_kwargs
        ti.trigger_timeout = deferral.timeout_at

    def _forget_deferral(self, ti: TaskInstance) -> None:
        self._deferrals.pop(ti.id, None)
        ti.trigger_timeout = None
