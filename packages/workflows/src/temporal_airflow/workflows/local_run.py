"""A real Airflow DagRun, with its TaskInstances, in a private in-memory SQLite database.

The workflow owns one :class:`LocalDagRun` per run. All scheduling decisions (trigger rules,
branching skips, setup/teardown, retries' waiting periods, mapped-task expansion, the run's final
state) are made by Airflow's own ``DagRun.update_state`` on these rows; this module only feeds it the
outcome of each task try and reads back what became runnable.

Everything here runs inside workflow code: it must be deterministic. Airflow's clock is routed to
``workflow.now()`` by :mod:`temporal_airflow.workflows.clock`, and every list handed back to the
workflow is sorted so that the order of commands never depends on SQLite's row order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pendulum
from airflow.exceptions import ParamValidationError
from airflow.models import import_all_models
from airflow.models.base import Base
from airflow.models.dag import DagModel
from airflow.models.dag_version import DagVersion
from airflow.models.dagbundle import DagBundleModel
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.taskmap import TaskMap
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from temporal_airflow.models import (
    INVALID_CONF_ERROR,
    RunContext,
    TaskExecutionResult,
    TaskSummary,
    XComEntry,
)

_BUNDLE = "temporal-airflow"
_FINISHED = frozenset(
    {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
)

import_all_models()


@dataclass(frozen=True, order=True)
class TaskKey:
    """Identifies a task instance within the run."""

    task_id: str
    map_index: int = -1

    def activity_id(self, try_number: int) -> str:
        suffix = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"{self.task_id}{suffix}#try{try_number}"


@dataclass(frozen=True)
class ReadyTask:
    """A task instance Airflow says may start now."""

    key: TaskKey
    try_number: int
    max_tries: int


class LocalDagRun:
    """Owns the in-workflow database and the DagRun in it."""

    def __init__(
        self,
        serialized_dag: dict[str, Any],
        *,
        run_id: str,
        run_type: str,
        logical_date: datetime | None,
        run_after: datetime,
        conf: dict[str, Any],
    ) -> None:
        self._engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        Base.metadata.create_all(self._engine)
        self._session: Session = sessionmaker(bind=self._engine, expire_on_commit=False)()
        self.dag = DagSerialization.from_dict(serialized_dag)
        session = self._session
        session.add(DagBundleModel(name=_BUNDLE))
        session.add(DagModel(dag_id=self.dag.dag_id, bundle_name=_BUNDLE))
        session.flush()
        DagVersion.write_dag(dag_id=self.dag.dag_id, bundle_name=_BUNDLE, session=session)
        data_interval = None
        if logical_date is not None:
            data_interval = self.dag.timetable.infer_manual_data_interval(run_after=pendulum.instance(logical_date))
        self.dag_run: DagRun = self.dag.create_dagrun(
            run_id=run_id,
            logical_date=logical_date,
            data_interval=data_interval,
            run_after=run_after,
            conf=conf,
            run_type=DagRunType(run_type),
            triggered_by=DagRunTriggeredByType.TIMETABLE
            if run_type == DagRunType.SCHEDULED
            else DagRunTriggeredByType.REST_API,
            state=DagRunState.RUNNING,
            start_date=run_after,
            session=session,
        )
        session.commit()

    # -- reading ------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return str(self.dag_run.state)

    @property
    def finished(self) -> bool:
        return self.dag_run.state in (DagRunState.SUCCESS, DagRunState.FAILED)

    @property
    def max_active_tasks(self) -> int:
        return int(self.dag.max_active_tasks)

    def run_context(self) -> RunContext:
        return RunContext.of(self.dag_run)

    def ancestors(self, task_id: str) -> list[str]:
        """Every task upstream of ``task_id``, sorted (their XComs are pullable by this task)."""
        seen: set[str] = set()
        stack = list(self.dag.get_task(task_id).upstream_task_ids)
        while stack:
            tid = stack.pop()
            if tid not in seen:
                seen.add(tid)
                stack.extend(self.dag.get_task(tid).upstream_task_ids)
        return sorted(seen)

    def task_attribute(self, task_id: str, name: str) -> Any:
        return getattr(self.dag.get_task(task_id), name, None)

    def _tis(self) -> list[TaskInstance]:
        tis = self.dag_run.get_task_instances(session=self._session)
        return sorted(tis, key=lambda ti: (ti.task_id, ti.map_index))

    def _ti(self, key: TaskKey) -> TaskInstance:
        ti = self.dag_run.get_task_instance(key.task_id, map_index=key.map_index, session=self._session)
        if ti is None:
            raise KeyError(f"task instance {key} not in run {self.dag_run.run_id}")
        return ti

    def summaries(self, xcoms: dict[TaskKey, list[XComEntry]], errors: dict[TaskKey, str]) -> list[TaskSummary]:
        return [
            TaskSummary(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=None if ti.state is None else str(ti.state),
                try_number=ti.try_number,
                start_date=ti.start_date,
                end_date=ti.end_date,
                xcoms=xcoms.get(TaskKey(ti.task_id, ti.map_index), []),
                error=errors.get(TaskKey(ti.task_id, ti.map_index)),
            )
            for ti in self._tis()
        ]

    def restore(self, tasks: Iterable[TaskSummary]) -> None:
        """Take over task states from Airflow's DB: finished and waiting-for-retry tries are kept,
        anything that was in flight runs again (with its try number carried on)."""
        keep = _FINISHED | {TaskInstanceState.UP_FOR_RETRY}
        for summary in tasks:
            ti = self.dag_run.get_task_instance(summary.task_id, map_index=summary.map_index, session=self._session)
            if ti is None:
                continue
            ti.try_number = summary.try_number
            if summary.state is not None and TaskInstanceState(summary.state) in keep:
                ti.state = TaskInstanceState(summary.state)
                ti.start_date = summary.start_date
                ti.end_date = summary.end_date
        self._session.commit()

    # -- scheduling ---------------------------------------------------------------------------------

    def ready_tasks(self, capacity: int) -> tuple[list[ReadyTask], bool]:
        """Ask Airflow what may run now and schedule at most ``capacity`` of those tasks.

        Scheduling goes through Airflow's ``DagRun.schedule_tis``, so tasks that need no execution
        (plain ``EmptyOperator``) succeed on the spot, as under Airflow's scheduler. Returns the tasks
        to start and whether anything finished without running (then ask again at once).
        """
        session = self._session
        session.expire_all()
        schedulable, _callback = self.dag_run.update_state(session=session, execute_callbacks=False)
        schedulable = sorted(schedulable, key=lambda t: (t.task_id, t.map_index))
        no_run = [ti for ti in schedulable if not ti.is_schedulable]
        to_run = [ti for ti in schedulable if ti.is_schedulable][: max(capacity, 0)]
        if no_run or to_run:
            self.dag_run.schedule_tis(no_run + to_run, session=session)
        session.commit()
        session.expire_all()
        ready = [
            ReadyTask(TaskKey(ti.task_id, ti.map_index), ti.try_number, ti.max_tries)
            for ti in self._tis()
            if ti.state == TaskInstanceState.SCHEDULED
        ]
        for ti in self._tis():
            if ti.state == TaskInstanceState.SCHEDULED:
                ti.state = TaskInstanceState.QUEUED
        session.commit()
        return ready, bool(no_run)

    def mark_running(self, key: TaskKey, when: datetime) -> None:
        ti = self._ti(key)
        ti.state = TaskInstanceState.RUNNING
        ti.start_date = when
        self._session.commit()

    def record_result(self, result: TaskExecutionResult) -> None:
        """Store one try's outcome the way Airflow's Execution API would."""
        session = self._session
        ti = self._ti(TaskKey(result.task_id, result.map_index))
        ti.state = TaskInstanceState(result.state)
        ti.start_date = result.start_date
        ti.end_date = result.end_date
        ti.duration = (result.end_date - result.start_date).total_seconds()
        ti.hostname = result.hostname or ""
        for entry in result.xcoms:
            if entry.mapped_length is not None:
                session.merge(
                    TaskMap(
                        dag_id=ti.dag_id,
                        task_id=ti.task_id,
                        run_id=ti.run_id,
                        map_index=ti.map_index,
                        length=entry.mapped_length,
                        keys=None,
                    )
                )
        if result.skipped_task_ids:
            self._skip(result.skipped_task_ids)
        session.commit()

    def record_lost_try(self, key: TaskKey, when: datetime) -> str:
        """A try whose worker kept failing: fail it, or put it up for retry as Airflow would."""
        ti = self._ti(key)
        ti.end_date = when
        ti.state = TaskInstanceState.UP_FOR_RETRY if ti.is_eligible_to_retry() else TaskInstanceState.FAILED
        self._session.commit()
        return str(ti.state)

    def _skip(self, task_ids: Iterable[str]) -> None:
        wanted = set(task_ids)
        for ti in self._tis():
            if ti.task_id in wanted and ti.state not in _FINISHED:
                ti.state = TaskInstanceState.SKIPPED

    def next_retry_at(self) -> datetime | None:
        """Earliest moment a task waiting in ``up_for_retry`` may run again (Airflow's own delay)."""
        times = [ti.next_retry_datetime() for ti in self._tis() if ti.state == TaskInstanceState.UP_FOR_RETRY]
        return min(times) if times else None

    def fail_unfinished(self, when: datetime) -> None:
        """Cancel the run: unfinished task instances end ``failed`` / ``upstream_failed``; run ``failed``."""
        for ti in self._tis():
            if ti.state in (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED):
                ti.state = TaskInstanceState.FAILED
                ti.end_date = when
            elif ti.state not in _FINISHED:
                ti.state = TaskInstanceState.UPSTREAM_FAILED
        self.dag_run.set_state(DagRunState.FAILED)
        self.dag_run.end_date = when
        self._session.commit()

    def dispose(self) -> None:
        self._session.close()
        self._engine.dispose()


def create_local_run(
    serialized_dag: dict[str, Any],
    *,
    run_id: str | None,
    logical_date: datetime | None,
    conf: dict[str, Any],
    run_type: str = DagRunType.MANUAL,
    run_after: datetime | None = None,
) -> LocalDagRun:
    """Create the run; a ``conf`` the DAG's params reject fails the workflow without retrying."""
    now = workflow.now()
    run_after = run_after or now
    if logical_date is None and run_type == DagRunType.MANUAL:
        logical_date = now
    run_id = run_id or DagRun.generate_run_id(
        run_type=DagRunType(run_type), logical_date=logical_date, run_after=run_after
    )
    try:
        return LocalDagRun(
            serialized_dag,
            run_id=run_id,
            run_type=run_type,
            logical_date=logical_date,
            run_after=run_after,
            conf=conf,
        )
    except (ParamValidationError, ValueError, TypeError) as err:
        raise ApplicationError(
            f"DAG run conf rejected for run {run_id!r}: {err}", type=INVALID_CONF_ERROR, non_retryable=True
        ) from err
