"""What a deferred task waits for, and its trigger run to its first event (in a child of the task host).

When a task defers (``self.defer(...)``, deferrable sensors), Airflow's task runner sends the trigger's
classpath and kwargs to the Execution API; :func:`describe_deferral` turns that payload into a
:class:`Deferral` for the workflow. Time triggers (``DateTimeTrigger``; ``TimeDeltaTrigger`` serializes
as one) need no process at all: the workflow waits for their moment on a durable timer, so their moment
and event are read here, ahead. Any other trigger runs its own ``async run()`` in :func:`run_trigger`, a
child entry point, with the task's DAG file loaded (a trigger class defined in it imports) and the task's
Execution API (:func:`temporal_airflow.activities.execution_clients.trigger_client`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta
from typing import Any

from temporal_airflow.activities.dag_loading import ChildError, load_dag
from temporal_airflow.activities.execution_clients import trigger_client
from temporal_airflow.activities.trigger_classes import TRIGGER_REFUSED, TriggerRefused, trigger_class
from temporal_airflow.models import Deferral, TriggerInput, TriggerOutcome

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


def _trigger(deferral: Deferral, dag_path: str | None = None) -> Any:
    """The trigger instance, built the way Airflow's triggerer builds it, from an allowed trigger class only
    (:mod:`temporal_airflow.activities.trigger_classes`: a ``BaseTrigger`` from Airflow, a provider, or the
    DAG folders), checked before its kwargs are even decoded."""
    from airflow.sdk.serde import deserialize

    cls = trigger_class(deferral.classpath, dag_path)
    kwargs = deserialize(deferral.trigger_kwargs)  # type: ignore[type-var]  # serde JSON, as the runner sent it
    assert isinstance(kwargs, dict), f"trigger kwargs of {deferral.classpath} are not a mapping"
    return cls(**kwargs)


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
    try:
        trigger = _trigger(trigger_input.deferral, task.dag_path)
    except TriggerRefused as err:
        raise ChildError(TRIGGER_REFUSED, str(err)) from None
    with set_supervisor_comms(supervisor.comms):
        event = asyncio.run(anext(trigger.run(), None))
    if event is None:
        raise RuntimeError(f"trigger {trigger_input.deferral.classpath} ended without an event")
    if isinstance(event, BaseTaskEndEvent):
        return TriggerOutcome(task_state=str(event.task_instance_state.value))
    return TriggerOutcome(payload=serialize(event.payload))
