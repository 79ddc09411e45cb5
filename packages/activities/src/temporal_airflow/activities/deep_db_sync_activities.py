"""Deep integration: activities that read from and write to Airflow's metadata DB.

They run on the activity worker with Airflow configured for the deployment's DB
(``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``). Every one is idempotent, so Temporal may retry it (a DB
outage is simply retried) and running it twice changes nothing:

* ``create_dagrun_record`` returns the existing run for a run id instead of creating a second one;
* ``sync_task_status`` never moves a task backwards (a late ``running`` cannot overwrite ``success``,
  an older try cannot overwrite a newer one) and keeps the previous try in TaskInstanceHistory;
* rows are written with no ``queued_by_job_id``: the scheduler's checks for tasks stuck in queued,
  tasks without heartbeats and orphaned tasks only look at rows its own job queued, so they leave
  Temporal-run rows alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.mapped_rows import MissingTaskInstance, task_instance_row
from temporal_airflow.models import (
    CREATE_DAGRUN_ACTIVITY,
    DAG_NOT_FOUND_ERROR,
    ENSURE_TASK_INSTANCES_ACTIVITY,
    INVALID_CONF_ERROR,
    LOAD_PREVIOUS_RUN_ACTIVITY,
    LOAD_SERIALIZED_DAG_ACTIVITY,
    START_DEEP_RUN_ACTIVITY,
    SYNC_DAGRUN_STATUS_ACTIVITY,
    SYNC_TASK_STATUS_ACTIVITY,
    CreateDagRunInput,
    CreateDagRunResult,
    DagRunStatusSync,
    EnsureTaskInstancesInput,
    LoadSerializedDagInput,
    LoadSerializedDagResult,
    PreviousRun,
    PreviousRunInput,
    PreviousRunResult,
    RunContext,
    StartDeepRunResult,
    TaskInstancesSnapshot,
    TaskStatusSync,
    TaskStatusSyncBatch,
    TaskSummary,
)

#: How far along a try a state is; a sync may only move a task instance forward.
_PROGRESS = {
    None: 0,
    "removed": 0,
    "scheduled": 1,
    "queued": 1,
    "restarting": 1,
    "running": 2,
    "deferred": 2,
    "up_for_retry": 3,
    "up_for_reschedule": 3,
    "success": 4,
    "failed": 4,
    "skipped": 4,
    "upstream_failed": 4,
}
_FINAL = 4


def _scheduler_dag(dag_id: str, session: Any) -> Any:
    from airflow.models.serialized_dag import SerializedDagModel

    model = SerializedDagModel.get(dag_id, session=session)
    if model is None:
        raise ApplicationError(
            f"DAG {dag_id!r} is not in Airflow's DB: is the file in the DAGs folder and parsed by the "
            "dag-processor (or `airflow dags reserialize`)?",
            type=DAG_NOT_FOUND_ERROR,
            non_retryable=True,
        )
    return model


@activity.defn(name=LOAD_SERIALIZED_DAG_ACTIVITY)
def load_serialized_dag(request: LoadSerializedDagInput) -> LoadSerializedDagResult:
    """The serialized DAG, its file and version as Airflow's DAG processor stored them."""
    from airflow.utils.session import create_session

    with create_session() as session:
        model = _scheduler_dag(request.dag_id, session)
        return LoadSerializedDagResult(
            dag_id=request.dag_id,
            fileloc=model.dag.fileloc,
            serialized_dag=model.data,
            dag_version_id=str(model.dag_version_id),
        )


@activity.defn(name=CREATE_DAGRUN_ACTIVITY)
def create_dagrun_record(request: CreateDagRunInput) -> CreateDagRunResult:
    """Create the DagRun (state ``running``) with its TaskInstances, or return the existing one."""
    from airflow.exceptions import ParamValidationError
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    with create_session() as session:
        if request.run_id:
            existing = session.scalar(
                select(DagRun).where(DagRun.dag_id == request.dag_id, DagRun.run_id == request.run_id)
            )
            if existing is not None:
                return CreateDagRunResult(
                    run_id=existing.run_id,
                    dag_run_id=existing.id,
                    created=False,
                    run_context=RunContext.of(existing),
                )
        dag = _scheduler_dag(request.dag_id, session).dag
        now = datetime.now(UTC)
        logical_date = request.logical_date
        data_interval = None
        if logical_date is not None:
            import pendulum

            data_interval = dag.timetable.infer_manual_data_interval(run_after=pendulum.instance(logical_date))
        run_id = request.run_id or DagRun.generate_run_id(
            run_type=DagRunType.MANUAL, logical_date=logical_date, run_after=now
        )
        try:
            run = dag.create_dagrun(
                run_id=run_id,
                logical_date=logical_date,
                data_interval=data_interval,
                run_after=now,
                conf=request.conf,
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.REST_API,
                state=DagRunState.RUNNING,
                start_date=now,
                session=session,
            )
        except (ParamValidationError, ValueError) as err:
            raise ApplicationError(
                f"DAG run conf rejected for {request.dag_id}: {err}",
                type=INVALID_CONF_ERROR,
                non_retryable=True,
            ) from err
        session.flush()
        return CreateDagRunResult(run_id=run.run_id, dag_run_id=run.id, created=True, run_context=RunContext.of(run))


@activity.defn(name=ENSURE_TASK_INSTANCES_ACTIVITY)
def ensure_task_instances(request: EnsureTaskInstancesInput) -> TaskInstancesSnapshot:
    """Create missing TaskInstances of an existing run (Airflow's ``verify_integrity``); return them all."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == request.dag_id, DagRun.run_id == request.run_id))
        if run is None:
            raise ApplicationError(
                f"DagRun {request.dag_id}/{request.run_id} not found",
                type=DAG_NOT_FOUND_ERROR,
                non_retryable=True,
            )
        model = _scheduler_dag(request.dag_id, session)
        run.dag = model.dag
        run.verify_integrity(session=session, dag_version_id=model.dag_version_id)
        session.flush()
        return TaskInstancesSnapshot(
            tasks=[
                TaskSummary(
                    task_id=ti.task_id,
                    map_index=ti.map_index,
                    state=None if ti.state is None else str(ti.state),
                    try_number=ti.try_number,
                    start_date=ti.start_date,
                    end_date=ti.end_date,
                )
                for ti in run.get_task_instances(session=session)
            ]
        )


@activity.defn(name=LOAD_PREVIOUS_RUN_ACTIVITY)
def load_previous_run(request: PreviousRunInput) -> PreviousRunResult:
    """The run ``depends_on_past`` / ``wait_for_downstream`` look back to, found as Airflow's own dependency
    does (the previous scheduled run with ``catchup``, else the previous run by logical date), with its
    task instances of ``request.task_ids``."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == request.dag_id, DagRun.run_id == request.run_id))
        if run is None:
            raise ApplicationError(
                f"DagRun {request.dag_id}/{request.run_id} not found", type=DAG_NOT_FOUND_ERROR, non_retryable=True
            )
        if request.catchup:
            previous = DagRun.get_previous_scheduled_dagrun(run.id, session=session)
        else:
            previous = DagRun.get_previous_dagrun(run, session=session)
        if previous is None or previous.logical_date is None:
            return PreviousRunResult()
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == request.dag_id,
                TaskInstance.run_id == previous.run_id,
                TaskInstance.task_id.in_(request.task_ids),
            )
        )
        return PreviousRunResult(
            PreviousRun(
                run_id=previous.run_id,
                logical_date=previous.logical_date,
                run_type=DagRunType(previous.run_type).value,
                state=DagRunState(previous.state).value,
                tasks=[
                    TaskSummary(
                        task_id=ti.task_id,
                        map_index=ti.map_index,
                        state=None if ti.state is None else str(ti.state),
                        try_number=ti.try_number,
                    )
                    for ti in rows
                ],
            )
        )


def apply_task_status(update: TaskStatusSync, session: Any) -> bool:
    """Write one task status if it moves the task instance forward; True when something changed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.state import TaskInstanceState

    try:
        ti = task_instance_row(session, update.dag_id, update.run_id, update.task_id, update.map_index)
    except MissingTaskInstance as err:
        raise ApplicationError(str(err), type=DAG_NOT_FOUND_ERROR, non_retryable=True) from None
    current = None if ti.state is None else str(ti.state)
    if update.try_number < ti.try_number:
        return False  # an older try
    if update.try_number == ti.try_number:
        behind = _PROGRESS[update.state] < _PROGRESS[current]
        other_ending = _PROGRESS[current] == _FINAL and update.state != current
        if behind or other_ending:
            return False  # late news, or the try already ended differently
    if update.try_number > ti.try_number and ti.try_number > 0 and ti.state is not None:
        ti.prepare_db_for_next_try(session)
    ti.try_number = update.try_number
    ti.state = TaskInstanceState(update.state)
    if update.start_date is not None:
        ti.start_date = update.start_date
    if update.end_date is not None:
        ti.end_date = update.end_date
        if ti.start_date is not None:
            ti.duration = (ti.end_date - ti.start_date).total_seconds()
    if update.hostname:
        ti.hostname = update.hostname
    for entry in update.xcoms:
        XComModel.set(
            entry.key,
            json.loads(entry.value_json),
            dag_id=update.dag_id,
            task_id=update.task_id,
            run_id=update.run_id,
            map_index=entry.map_index,
            serialize=False,
            session=session,
        )
    return True


@activity.defn(name=SYNC_TASK_STATUS_ACTIVITY)
def sync_task_status(batch: TaskStatusSyncBatch) -> int:
    """Write task statuses (state, dates, try, hostname, XComs); returns how many rows changed."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return sum(apply_task_status(update, session) for update in batch.updates)


@activity.defn(name=SYNC_DAGRUN_STATUS_ACTIVITY)
def sync_dagrun_status(update: DagRunStatusSync) -> None:
    """Write the DagRun's state (``running`` at start, final state and end date at the end).

    The final state lands only on a ``running`` run: a run that is already final was marked by its user
    (success/failed in the UI or REST API, which also cancels the workflow) or ended by the orchestrator,
    and a ``queued`` one was cleared for a new execution; their state is not the workflow's to change.
    """
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == update.dag_id, DagRun.run_id == update.run_id))
        if run is None:
            raise ApplicationError(
                f"DagRun {update.dag_id}/{update.run_id} not found",
                type=DAG_NOT_FOUND_ERROR,
                non_retryable=True,
            )
        if update.state == DagRunState.RUNNING and run.state in (DagRunState.SUCCESS, DagRunState.FAILED):
            return  # never reopen a finished run from a late sync
        if update.state != DagRunState.RUNNING and run.state != DagRunState.RUNNING:
            return  # the user's mark (or a clear) came first and wins
        run.set_state(DagRunState(update.state))
        if update.end_date is not None:
            run.end_date = update.end_date
        if run.state == DagRunState.SUCCESS:
            _prune_deadlines(run, session)


def _prune_deadlines(run: Any, session: Any) -> None:
    """A run that succeeded no longer needs its Deadline alerts that were not missed: removed exactly as
    Airflow's ``DagRun.update_state`` does, so the scheduler never fires a miss for a run done in time."""
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels

    dag = _scheduler_dag(run.dag_id, session).dag
    if not dag.deadline:
        return
    alerts = [DeadlineAlert.get_by_id(alert_id, session=session) for alert_id in dag.deadline]
    if any(alert.reference_class in SerializedReferenceModels.TYPES.DAGRUN for alert in alerts):
        Deadline.prune_deadlines(session=session, conditions={DagRun.id: run.id})


@activity.defn(name=START_DEEP_RUN_ACTIVITY)
def start_deep_run(request: CreateDagRunInput) -> StartDeepRunResult:
    """Everything a deep run needs before its first task, in one activity: the serialized DAG, the DagRun
    (created or found), its task instances (missing ones created), the DagRun ``running``. Each step is
    its own transaction and idempotent, so a retry after a partial attempt completes it."""
    dag = load_serialized_dag(LoadSerializedDagInput(request.dag_id))
    run = create_dagrun_record(request)
    task_instances = ensure_task_instances(EnsureTaskInstancesInput(request.dag_id, run.run_id))
    sync_dagrun_status(DagRunStatusSync(request.dag_id, run.run_id, "running"))
    return StartDeepRunResult(dag=dag, run=run, task_instances=task_instances)


SYNC_ACTIVITIES: list[Callable[..., Any]] = [
    start_deep_run,
    load_serialized_dag,
    create_dagrun_record,
    ensure_task_instances,
    load_previous_run,
    sync_task_status,
    sync_dagrun_status,
]
