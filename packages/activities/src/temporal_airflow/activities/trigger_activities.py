"""Deferred tasks without Airflow's triggerer: what a deferral waits for, and its trigger as an activity.

When a task defers (``self.defer(...)``, deferrable sensors), Airflow's task runner sends the trigger's
classpath and kwargs to the Execution API; :func:`describe_deferral` turns that payload into a
:class:`Deferral` for the workflow. Time triggers (``DateTimeTrigger``; ``TimeDeltaTrigger`` serializes
as one) need no process at all: the workflow waits for their moment on a durable timer. Any other trigger
runs in ``run_airflow_trigger``: its own ``async run()``, in a fresh child process of the task host (like
a task try, with the task's DAG file loaded, so a trigger class defined in it imports), heartbeating
until its first event, which the task then resumes with, as under Airflow's triggerer.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.child import ChildFailed, run_in_child
from temporal_airflow.activities.task_activities import task_log_path
from temporal_airflow.models import RUN_TRIGGER_ACTIVITY, TRIGGER_FAILED_ERROR, Deferral, TriggerInput, TriggerOutcome

#: Where ``DateTimeTrigger`` and ``TimeDeltaTrigger`` serialize to.
_DATETIME_TRIGGER = "airflow.providers.standard.triggers.temporal.DateTimeTrigger"


def describe_deferral(payload: dict[str, Any], deferred_at: datetime) -> Deferral:
    """The :class:`Deferral` for the runner's defer payload (``TIDeferredStatePayload`` as JSON)."""
    from pydantic import TypeAdapter

    timeout = payload.get("trigger_timeout")
    deferral = Deferral(
        classpath=payload["classpath"],
        trigger_kwargs=payload.get("trigger_kwargs") or {},
        next_method=payload["next_method"],
        next_kwargs=payload.get("next_kwargs") or {},
        timeout_at=None if timeout is None else deferred_at + TypeAdapter(timedelta).validate_python(timeout),
    )
    if deferral.classpath == _DATETIME_TRIGGER:
        _read_moment(deferral)
    return deferral


def _read_moment(deferral: Deferral) -> None:
    """Fill in when a ``DateTimeTrigger`` fires and the event it then yields (its ``run()``, known ahead)."""
    from airflow.sdk.serde import serialize

    trigger = _trigger(deferral)
    deferral.moment = trigger.moment
    if trigger.end_from_trigger:
        deferral.moment_event = TriggerOutcome(task_state="success")
    else:
        deferral.moment_event = TriggerOutcome(payload=serialize(trigger.moment))


def _trigger(deferral: Deferral) -> Any:
    """The trigger instance, built the way Airflow's triggerer builds it."""
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize

    kwargs = deserialize(deferral.trigger_kwargs)  # type: ignore[type-var]  # serde JSON, as the runner sent it
    assert isinstance(kwargs, dict), f"trigger kwargs of {deferral.classpath} are not a mapping"
    return import_string(deferral.classpath)(**kwargs)


def run_trigger(trigger_input: TriggerInput) -> TriggerOutcome:
    """Child entry point: the trigger's first event (it reads connections the way its task does)."""
    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )
    from airflow.sdk.serde import serialize
    from airflow.triggers.base import BaseTaskEndEvent

    from temporal_airflow.activities.task_process import load_dag, trigger_client

    task = trigger_input.task
    load_dag(task.dag_path, task.run.dag_id)  # a trigger class defined next to the DAG imports from it
    supervisor = InProcessTestSupervisor(
        id=uuid.uuid4(),
        pid=os.getpid(),
        process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="trigger").bind(),
        client=trigger_client(task),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    trigger = _trigger(trigger_input.deferral)
    with set_supervisor_comms(supervisor.comms):
        event = asyncio.run(anext(trigger.run(), None))
    if event is None:
        raise RuntimeError(f"trigger {trigger_input.deferral.classpath} ended without an event")
    if isinstance(event, BaseTaskEndEvent):
        return TriggerOutcome(task_state=str(event.task_instance_state.value))
    return TriggerOutcome(payload=serialize(event.payload))


@activity.defn(name=RUN_TRIGGER_ACTIVITY)
async def run_airflow_trigger(trigger_input: TriggerInput) -> TriggerOutcome:
    """Run a deferred task's trigger until its first event, heartbeating meanwhile.

    A trigger that raises ends as Airflow's ``Trigger failure`` (the task resumes only to fail, with the
    traceback in its log); a lost worker makes Temporal start the trigger again elsewhere.
    """
    task = trigger_input.task
    trigger = trigger_input.deferral.classpath
    activity.logger.info("Waiting for %s of %s.%s try %s", trigger, task.run.dag_id, task.task_id, task.try_number)
    try:
        outcome: TriggerOutcome = await run_in_child(
            "trigger", trigger_input, log_path=task_log_path(task), dag_path=task.dag_path
        )
    except ChildFailed as err:
        raise ApplicationError(str(err), type=TRIGGER_FAILED_ERROR, non_retryable=True) from None
    return outcome


TRIGGER_ACTIVITIES = [run_airflow_trigger]
