"""Code that runs in the child process of one task try (or one DAG-file parse, or one deferred task's
trigger: :mod:`temporal_airflow.activities.deferrals`).

A fresh process per try keeps tries apart: module globals of the Task SDK's runner, the DAG file's
own globals, environment variables and signal handlers never leak between concurrent tasks, and a
task that hangs or crashes takes nothing else down. Children are forked from a *forkserver* that has
Airflow pre-imported (:mod:`temporal_airflow.activities.preload`), so a try starts in milliseconds rather
than seconds; a try of a DAG the host has seen is forked from a process that already parsed its file
(:mod:`temporal_airflow.activities.task_host`), so each try starts from its own pristine copy of the
parsed DAG instead of importing the file again (:mod:`temporal_airflow.activities.dag_loading`).

Whatever a child sends back may enter workflow history, so its error texts go through Airflow's secrets
masker first: the passwords of the connections and the values of the sensitive variables the task read
(registered with the masker in this process when they were read) come back as ``***``.
"""

from __future__ import annotations

import os
import traceback
from datetime import UTC, datetime
from typing import Any

from temporal_airflow.activities.airflow_compat import mapped_length, run_task_in_process
from temporal_airflow.activities.dag_loading import ChildError, load_dag, serialize_dag_file
from temporal_airflow.activities.deep_tries import task_instance
from temporal_airflow.activities.deferrals import describe_deferral, run_trigger
from temporal_airflow.activities.execution_clients import TryClient, deep_client, fresh_orm, hostname, standalone_client
from temporal_airflow.models import ActivityTaskInput, TaskExecutionResult, XComEntry

#: States a try ends in. Airflow's DB holding one of them for a try means that try ran to its end.
_ENDED_STATES = frozenset({"success", "failed", "up_for_retry", "skipped", "upstream_failed", "removed"})


def _recorded_outcome(task: ActivityTaskInput, downstream_task_ids: set[str]) -> TaskExecutionResult | None:
    """The outcome Airflow's DB holds for this try, if it already ended.

    Temporal redelivers an activity whose completion was lost (worker died just after the try, timeout
    while reporting): the try must not run a second time, its recorded outcome is the result. A first
    delivery has nothing to find, so only redeliveries ask. The try's
    mapped length (for downstream mapping) and the direct downstream tasks it skipped are read back too.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run = task.run
    with create_session() as session:
        ti = task_instance(session, task)
        if ti is None or ti.try_number != task.try_number or _plain(ti.state) not in _ENDED_STATES:
            return None
        state = _plain(ti.state)
        length = mapped_length(session, run.dag_id, run.run_id, task.task_id, task.map_index)
        skipped = session.scalars(
            select(TaskInstance.task_id).where(
                TaskInstance.dag_id == run.dag_id,
                TaskInstance.run_id == run.run_id,
                TaskInstance.task_id.in_(downstream_task_ids),
                TaskInstance.state == "skipped",
            )
        ).all()
        return TaskExecutionResult(
            task_id=task.task_id,
            map_index=task.map_index,
            try_number=task.try_number,
            state=state,
            start_date=ti.start_date or ti.end_date or datetime.now(UTC),
            end_date=ti.end_date or datetime.now(UTC),
            xcoms=[]
            if length is None
            else [XComEntry(task.task_id, "return_value", "null", map_index=task.map_index, mapped_length=length)],
            skipped_task_ids=sorted(set(skipped)),
            error=f"try {task.try_number} had already ended {state} when its activity was delivered again; it was "
            "not run again (its error is in its log)"
            if state in ("failed", "up_for_retry")
            else None,
            hostname=ti.hostname,
        )


def _release_trigger(task: ActivityTaskInput) -> None:
    """Deep mode: the workflow waits for a deferred try's trigger itself, so the ``Trigger`` row Airflow's
    Execution API created is removed (no triggerer runs it, no scheduler times it out); the task
    instance stays ``deferred`` in the UI until the workflow resumes it."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = task_instance(session, task)
        if ti is None or ti.trigger_id is None:
            return
        trigger_id, ti.trigger_id, ti.trigger_timeout = ti.trigger_id, None, None
        session.flush()
        session.query(Trigger).filter(Trigger.id == trigger_id).delete()


def _failed(task: ActivityTaskInput, started: datetime, error: str, tb: str | None = None) -> TaskExecutionResult:
    """A try that failed before Airflow's runner could run it (its DAG did not load)."""
    return TaskExecutionResult(
        task_id=task.task_id,
        map_index=task.map_index,
        try_number=task.try_number,
        state="failed",
        start_date=started,
        end_date=datetime.now(UTC),
        error=error,
        traceback=tb,
        hostname=hostname(),
    )


def run_task_try(task: ActivityTaskInput) -> TaskExecutionResult:
    """Child entry point: one try of one task through Airflow's own task runner."""
    from airflow.sdk.api.datamodels._generated import TaskInstance as SdkTaskInstance

    started = datetime.now(UTC)
    try:
        dag = load_dag(task.dag_path, task.run.dag_id)
        operator = dag.get_task(task.task_id)
    except ChildError as err:
        return _failed(task, started, str(err))
    except Exception as err:
        return _failed(task, started, f"{type(err).__name__}: {err}", traceback.format_exc())

    if task.deep_integration:
        fresh_orm()
        redelivered = task.delivery_attempt > 1
        if redelivered and (recorded := _recorded_outcome(task, set(operator.downstream_task_ids))) is not None:
            return recorded
        api = deep_client(task)
    else:
        api = standalone_client(task)
    sdk_ti = SdkTaskInstance(
        id=api.ti_id,
        task_id=task.task_id,
        dag_id=task.run.dag_id,
        run_id=task.run.run_id,
        try_number=task.try_number,
        map_index=task.map_index,
        dag_version_id=api.dag_version_id,
    )
    outcome = run_task_in_process(ti=sdk_ti, task=operator, client=api.client)
    if api.transport.outcome.undelivered_state is not None:
        # The API never recorded how the try ended: fail the activity, Temporal retries it.
        raise RuntimeError(
            f"Airflow's Execution API did not record state {api.transport.outcome.undelivered_state!r} for "
            f"{task.run.dag_id}.{task.task_id} try {task.try_number}"
        )
    return _result(task, api, outcome, started)


def _result(task: ActivityTaskInput, api: TryClient, outcome: Any, started: datetime) -> TaskExecutionResult:
    """What the runner's ``outcome`` and the calls the try made (``api``) say about the try."""
    error = outcome.error
    reported = api.transport.outcome
    ended = datetime.now(UTC)
    if task.deep_integration and reported.deferral is not None:
        _release_trigger(task)
    return TaskExecutionResult(
        task_id=task.task_id,
        map_index=task.map_index,
        try_number=task.try_number,
        state=reported.state or _plain(outcome.state),
        start_date=outcome.ti.start_date or started,
        end_date=ended,
        xcoms=list(reported.pushed_xcoms.values()),
        skipped_task_ids=sorted(set(reported.skipped_task_ids)),
        retry_delay_seconds=reported.retry_delay_seconds,
        error=None if error is None else _describe_error(error),
        traceback=None
        if error is None
        else "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        hostname=hostname(),
        reschedule_date=None if reported.reschedule_date is None else datetime.fromisoformat(reported.reschedule_date),
        deferral=None if reported.deferral is None else describe_deferral(reported.deferral, ended),
    )


def _describe_error(error: BaseException) -> str:
    """``Type: message``; an Execution API refusal (``ServerResponseError``) adds the API's reason, which
    its message leaves out ("Server returned error")."""
    text = f"{type(error).__name__}: {error}"
    detail = getattr(error, "detail", None)
    if isinstance(detail, dict) and ("reason" in detail or "message" in detail):
        text += f" ({detail.get('reason', 'error')}: {detail.get('message', '')})"
    return text


def _plain(state: Any) -> str:
    """A state as its plain value (``"up_for_retry"``), whether given as a str enum or a string."""
    return str(getattr(state, "value", state))


def _redact(text: str) -> str:
    """``text`` with every secret registered with Airflow's secrets masker in this process as ``***``."""
    from airflow.sdk.log import redact as airflow_redact

    return str(airflow_redact(text))


def _without_secrets(result: TaskExecutionResult) -> TaskExecutionResult:
    result.error = None if result.error is None else _redact(result.error)
    result.traceback = None if result.traceback is None else _redact(result.traceback)
    return result


def child_main(kind: str, payload: Any, log_path: str) -> tuple[bool, Any]:
    """Entry of a forked child: run ``kind`` on ``payload``; returns ``(ok, value)``.

    The child's stdout and stderr (task logs included) go to ``log_path``.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        if kind == "task":
            return True, _without_secrets(run_task_try(payload))
        if kind == "trigger":
            return True, run_trigger(payload)
        return True, serialize_dag_file(payload)
    except ChildError as err:
        return False, (err.kind, _redact(str(err)))
    except BaseException as err:
        return False, ("ChildProcessError", _redact(f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
