"""The Execution API a child talks to: answered from the activity input (standalone) or Airflow's own on
the metadata DB (deep), for a task try or for a deferred task's trigger.

A try and its trigger must read connections and variables from the same place, so both get their client
here. Each client wraps its transport in a :class:`~temporal_airflow.activities.execution_api.RecordingTransport`
(for a try) and is built by :func:`temporal_airflow.activities.airflow_compat.execution_api_client`, the
one place that knows how the installed Task SDK builds one.
"""

from __future__ import annotations

import functools
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from temporal_airflow.activities.airflow_compat import execution_api_client, in_process_api
from temporal_airflow.activities.dag_loading import ChildError
from temporal_airflow.activities.deep_tries import queue_try, task_instance
from temporal_airflow.activities.execution_api import RecordingTransport, StandaloneExecutionAPI
from temporal_airflow.models import DAG_NOT_FOUND_ERROR, ActivityTaskInput

#: Where Airflow's in-process client sends its calls (never resolved: the transport answers them).
IN_PROCESS_URL = "http://in-process.invalid./"


@dataclass
class TryClient:
    """A try's Execution API client, the transport recording what the try reported, and the ids the
    task runner reports the try under."""

    client: Any
    transport: RecordingTransport
    ti_id: uuid.UUID
    dag_version_id: uuid.UUID


@functools.cache
def hostname() -> str:
    """This machine's name as tries report it (looked up once, in the task host)."""
    return socket.getfqdn()


def standalone_client(task: ActivityTaskInput) -> TryClient:
    """Execution API answered from the activity input; fresh ids (there is no TaskInstance row)."""
    transport = StandaloneExecutionAPI(task).transport()
    return TryClient(execution_api_client(transport), transport, uuid.uuid4(), uuid.uuid4())


def deep_client(task: ActivityTaskInput) -> TryClient:
    """Airflow's own Execution API on the metadata DB; the TaskInstance row is queued for this try.

    The runner then marks it ``running`` (start date, hostname, pid), writes XComs and the final state
    through Airflow's API code, so the UI and REST API see the try as it happens, and connections and
    variables are read from the DB (and any secrets backend) as under Airflow's own workers.
    """
    from airflow.api_fastapi.common.dagbag import dag_bag_from_app
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    run = task.run
    with create_session() as session:
        ti = task_instance(session, task)
        if ti is None:
            raise ChildError(DAG_NOT_FOUND_ERROR, f"no task instance {run.dag_id}.{task.task_id} in run {run.run_id}")
        queue_try(ti, task, session, hostname())
        # Resuming a deferred try: the event the workflow waited for goes where Airflow's triggerer puts it.
        ti.next_method, ti.next_kwargs = task.next_method, task.next_kwargs
        ti.trigger_id = None
        session.flush()
        ti_id, dag_version_id = ti.id, ti.dag_version_id
    api = in_process_api()
    api.app.dependency_overrides[dag_bag_from_app] = DBDagBag
    transport = RecordingTransport(api.transport, keep_xcom_values=False)
    client = execution_api_client(transport, ti_id, base_url=IN_PROCESS_URL)
    return TryClient(client, transport, ti_id, dag_version_id)


def trigger_client(task: ActivityTaskInput) -> Any:
    """The Execution API a deferred task's trigger reads connections and variables from: the task's."""
    if task.deep_integration:
        fresh_orm()
        return execution_api_client(in_process_api().transport, base_url=IN_PROCESS_URL)
    return standalone_client(task).client


def fresh_orm() -> None:
    """Never share the forked parent's DB connections."""
    from airflow import settings

    settings.dispose_orm()
    settings.configure_orm()
