"""Recording what happened to the run's task instances, the way Airflow's Execution API and UI would.

A try's outcome (:meth:`RunOutcomes.record_result`: state, dates, the XCom facts a mapped expansion
reads, the skips a branch asked for, a sensor's or deferral's wait), a try that produced none
(:meth:`~RunOutcomes.record_lost_try`), a user's mark or clear (:meth:`~RunOutcomes.set_state`), a
deferred try woken by its trigger, and the run's own end when cancelled or past ``dagrun_timeout``.
What runs next is then Airflow's decision, at the next turn; this module decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from airflow.models.taskinstance import TaskInstance
from airflow.utils.state import DagRunState, TaskInstanceState
from sqlalchemy.orm import Session

from temporal_airflow.models import TaskExecutionResult, TriggerOutcome
from temporal_airflow.workflows import airflow_compat
from temporal_airflow.workflows.mapped_outputs import MappedOutputs
from temporal_airflow.workflows.rows import RunRows
from temporal_airflow.workflows.states import FINISHED, MARKABLE, STARTED, InvalidTaskState, task_state
from temporal_airflow.workflows.values import ReadyTask, TaskKey
from temporal_airflow.workflows.wait_records import WaitRecords


class RunOutcomes:
    """Writes outcomes into one run's rows (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        dag_run: Any,
        rows: RunRows,
        waits: WaitRecords,
        outputs: MappedOutputs,
        known_ready: set[TaskKey],
    ) -> None:
        self._session, self._run, self._rows = session, dag_run, rows
        self._waits, self._outputs, self._known_ready = waits, outputs, known_ready

    def mark_running(self, key: TaskKey, when: datetime) -> None:
        ti = self._rows.ti(key)
        ti.state = TaskInstanceState.RUNNING
        ti.start_date = when
        self._session.commit()

    def record_result(self, result: TaskExecutionResult) -> None:
        """Store one try's outcome the way Airflow's Execution API would."""
        ti = self._rows.ti(TaskKey(result.task_id, result.map_index))
        ti.state = task_state(result.state)
        ti.start_date = result.start_date
        ti.end_date = result.end_date
        ti.duration = (result.end_date - result.start_date).total_seconds()
        ti.hostname = result.hostname or ""
        airflow_compat.set_retry_delay(
            ti, result.retry_delay_seconds if ti.state == TaskInstanceState.UP_FOR_RETRY else None
        )
        # What Airflow's expansion reads (lengths, a marker per return value); values stay out.
        self._outputs.record(self._session, self._run, ti, result.xcoms, ti.end_date)
        if result.skipped_task_ids:
            self._skip(result.skipped_task_ids)
        self._waits.record(ti, result)
        self._retry_as_next_attempt(ti)
        self._session.commit()

    def record_lost_try(self, key: TaskKey, when: datetime) -> str:
        """A try that produced no outcome (its process died, or its worker kept failing): one failed
        Airflow try, put up for retry when Airflow's retry rules allow."""
        ti = self._rows.ti(key)
        ti.end_date = when
        airflow_compat.set_retry_delay(ti, None)
        ti.state = TaskInstanceState.UP_FOR_RETRY if ti.is_eligible_to_retry() else TaskInstanceState.FAILED
        state = str(ti.state)
        self._retry_as_next_attempt(ti)
        self._session.commit()
        return state

    def set_state(self, key: TaskKey, state: str | None, when: datetime) -> bool:
        """A user's mark from Airflow's UI or REST API (``success``, ``failed`` or ``skipped``), or a clear
        (``None``: it runs again, with its ``retries`` anew), as Airflow leaves the row. False if the run
        has no such task instance."""
        ti = self._rows.by_key.get(key)
        marked = None if state is None else task_state(state)
        if marked is not None and marked not in MARKABLE:
            raise InvalidTaskState(f"a task instance can be marked {sorted(MARKABLE)}, not {state!r}")
        if ti is None:
            return False
        if marked is None:
            max_tries = ti.try_number + (ti.task.retries if ti.task is not None else 0)
            if ti.try_number > 0:
                ti = self._next_attempt(ti)
            ti.state = None
            ti.end_date = None
            ti.max_tries = max_tries
            ti.next_method = ti.next_kwargs = None
        else:
            ti.state = marked
            ti.start_date = ti.start_date or when
            ti.end_date = when
        self._known_ready.discard(key)
        self._session.commit()
        return True

    def _next_attempt(self, ti: TaskInstance) -> TaskInstance:
        successor: TaskInstance = airflow_compat.next_attempt(ti, self._session)
        self._rows.replace(ti, successor)
        return successor

    def _retry_as_next_attempt(self, ti: TaskInstance) -> None:
        """A try put up for retry: its next try's row takes its place (see :func:`airflow_compat.next_attempt`)."""
        if ti.state == TaskInstanceState.UP_FOR_RETRY:
            self._next_attempt(ti)

    def _skip(self, task_ids: Iterable[str]) -> None:
        wanted = set(task_ids)
        for ti in self._rows.ordered:
            if ti.task_id in wanted and ti.state not in FINISHED:
                ti.state = TaskInstanceState.SKIPPED

    def resume_deferred(self, key: TaskKey, outcome: TriggerOutcome, when: datetime) -> ReadyTask | None:
        """Wake a deferred task instance: the try to start again, or ``None`` when the event ended it."""
        ti = self._rows.ti(key)
        if ti.state != TaskInstanceState.DEFERRED:
            return None
        resumed = self._waits.resume(ti, outcome, when)
        self._retry_as_next_attempt(ti)
        self._session.commit()
        return ReadyTask(key, ti.try_number, ti.max_tries) if resumed else None

    def time_out(self, when: datetime) -> TaskInstance | None:
        """End the run as Airflow's scheduler does when ``dagrun_timeout`` passes: failed, every unfinished
        task instance skipped. Returns the last one started (for the failure callback's context)."""
        unfinished = [ti for ti in self._rows.ordered if ti.state not in FINISHED]
        last = max(unfinished, key=lambda ti: ti.start_date or datetime.min.replace(tzinfo=UTC), default=None)
        self._run.set_state(DagRunState.FAILED)
        self._run.end_date = when
        for ti in unfinished:
            ti.state = TaskInstanceState.SKIPPED
        self._session.commit()
        return last

    def fail_unfinished(self, when: datetime) -> None:
        """Cancel the run: unfinished task instances end ``failed`` / ``upstream_failed``; run ``failed``."""
        for ti in self._rows.ordered:
            if ti.state in STARTED:
                ti.state = TaskInstanceState.FAILED
                ti.end_date = when
            elif ti.state not in FINISHED:
                ti.state = TaskInstanceState.UPSTREAM_FAILED
        self._run.set_state(DagRunState.FAILED)
        self._run.end_date = when
        self._session.commit()
