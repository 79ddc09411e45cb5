"""Every version-dependent touch of Airflow by the activity worker, behind one door.

Airflow's providers keep one ``version_compat`` module; this is the activity worker's. The supported
releases (:mod:`temporal_airflow.models.airflow_support`: 3.2, 3.3 and 3.4) differ where the worker
reaches past the Task SDK's public face:

* **the Task SDK's HTTP client**: an ``httpx`` client up to 3.3, an ``httpx2`` one from 3.4. The
  Execution API transports of :mod:`.execution_api` must be of the client's library (it asserts their
  type), so :func:`sdk_http` is the library the SDK's ``Client`` derives from;
* **``run_task_in_process``** takes the Execution API client as ``client`` from 3.3; on 3.2 the
  supervisor always builds it with its ``_api_client`` hook, so :func:`run_task_in_process` answers that
  hook with ours;
* **the task map**: ``TaskMap`` rows up to 3.3; 3.4 folds the task map into XCom (``mapped_length``)
  and expands a mapped task from its placeholder ``TaskInstance`` (:func:`mapped_length`,
  :func:`expand_mapped_task`);
* **the in-process Execution API's start**: from 3.3 its transport returns once the app's lifespan (which
  registers the JWT services every request's middleware reads) has started; 3.2's starts it in the
  background, and ends it when the ``InProcessExecutionAPI`` object (not its transport) is collected, so a
  try's calls could find no services and the try hang. :func:`in_process_api` waits for the start on
  every release (at once where it has already started) and ties the object's life to its transport's;
* **the try an in-process Execution API call is for**: 3.4's in-process API reads it from a header for
  routes that do not name it (XComs, variables); :func:`execution_api_client` sets it where it exists.

Each branch is chosen by a feature or signature check, never by the version alone; the version is the
guard: :func:`check` refuses an Airflow outside the supported range with one clear line, at the worker's
start (:mod:`.worker`, :mod:`.plugin`) rather than deep inside a try. :data:`TOUCHED` lists what the door
reaches for, so a test can check each on the installed Airflow.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import time
import uuid
from types import ModuleType
from typing import Any

from sqlalchemy.sql.elements import ColumnElement

from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, check_airflow_version

COMPONENT = "temporal-airflow activity worker"
#: The header 3.4's in-process Execution API reads the calling try's id from.
ATTEMPT_HEADER = "X-Airflow-In-Process-Attempt-Id"
#: Every Airflow attribute the door chooses by (module -> attributes), present or not on a given release.
TOUCHED: dict[str, tuple[str, ...]] = {
    "airflow.sdk.api.client": ("Client",),
    "airflow.sdk.execution_time.supervisor": ("run_task_in_process", "InProcessTestSupervisor"),
    "airflow.models.taskmap": ("TaskMap",),
    "airflow.models.taskinstance": ("TaskInstance",),
    "airflow.models.xcom": ("XComModel",),
    "airflow.api_fastapi.execution_api.app": ("InProcessExecutionAPI",),
}
#: How long :func:`in_process_api` waits for the in-process Execution API's lifespan to start.
LIFESPAN_TIMEOUT = 60.0


def check() -> tuple[int, int]:
    """The installed Airflow's release line; :class:`UnsupportedAirflowVersion` (one line) outside the range."""
    import airflow

    return check_airflow_version(airflow.__version__, COMPONENT)


@functools.cache
def sdk_http() -> ModuleType:
    """``httpx`` or ``httpx2``: the library the Task SDK's Execution API client is built on."""
    check()
    from airflow.sdk.api.client import Client

    for klass in Client.__mro__:
        library = klass.__module__.partition(".")[0]
        if library in ("httpx", "httpx2"):
            return importlib.import_module(library)
    raise UnsupportedAirflowVersion(f"{COMPONENT}: the Task SDK's client is built on neither httpx nor httpx2")


def passes_client() -> bool:
    """Whether ``run_task_in_process`` takes the Execution API client (3.3 on)."""
    from airflow.sdk.execution_time.supervisor import run_task_in_process as run

    return "client" in inspect.signature(run).parameters


def run_task_in_process(ti: Any, task: Any, client: Any) -> Any:
    """Airflow's in-process task runner on ``client`` (an Execution API client); its ``TaskRunResult``."""
    check()
    from airflow.sdk.execution_time import supervisor

    if passes_client():
        return supervisor.run_task_in_process(ti=ti, task=task, client=client)
    return _answering_with(client).start(what=ti, task=task)


def _answering_with(client: Any) -> Any:
    """3.2: an in-process supervisor whose ``_api_client`` hook (which ``start`` builds its client with)
    answers ``client``."""
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    if not callable(getattr(InProcessTestSupervisor, "_api_client", None)):
        raise UnsupportedAirflowVersion(f"{COMPONENT}: the in-process task runner takes no Execution API client")

    class AnsweringSupervisor(InProcessTestSupervisor):  # type: ignore[misc,valid-type]
        @staticmethod
        def _api_client(*args: Any, **kwargs: Any) -> Any:
            return client

    return AnsweringSupervisor


def names_attempts() -> bool:
    """Whether the in-process Execution API identifies the calling try by :data:`ATTEMPT_HEADER` (3.4 on)."""
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    return "attempt_id" in inspect.signature(InProcessTestSupervisor._api_client).parameters


def in_process_api() -> Any:
    """Airflow's in-process Execution API (``InProcessExecutionAPI``), its transport created and its app's
    lifespan started: 3.2's transport starts the lifespan in the background and returns before it ran."""
    check()
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    api = in_process_api_server()
    # 3.2's lifespan ends when the API object is collected, not its transport: the transport keeps it.
    api.transport.temporal_airflow_api = api
    deadline = time.monotonic() + LIFESPAN_TIMEOUT
    while not getattr(api.app.state, "svcs_registry", None):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{COMPONENT}: Airflow's in-process Execution API did not start")
        time.sleep(0.01)
    return api


def execution_api_client(transport: Any, attempt_id: uuid.UUID | None = None, base_url: str | None = None) -> Any:
    """The Task SDK's in-process Execution API client on ``transport`` (one of :func:`sdk_http`'s), for the
    try ``attempt_id`` (its task instance id) when the API needs to know it."""
    check()
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    client = InProcessTestSupervisor._Client(base_url=None, dry_run=True, token="", transport=transport)
    if base_url is not None:
        client.base_url = base_url
    if attempt_id is not None and names_attempts():
        client.headers[ATTEMPT_HEADER] = str(attempt_id)
    return client


def has_task_map_table() -> bool:
    """Whether the task map is its own table (up to 3.3) rather than XCom's ``mapped_length`` (3.4 on)."""
    return importlib.util.find_spec("airflow.models.taskmap") is not None


def mapped_length(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> int | None:
    """How many values a downstream task maps over from this try's return value (``None``: not mappable)."""
    from sqlalchemy import select

    if has_task_map_table():
        from airflow.models.taskmap import TaskMap

        length, rows = TaskMap.length, TaskMap
        where: tuple[ColumnElement[bool], ...] = ()
    else:
        from airflow.models.xcom import XComModel

        length, rows = XComModel.mapped_length, XComModel
        where = (XComModel.key == "return_value",)
    return session.scalar(  # type: ignore[no-any-return]
        select(length).where(
            rows.dag_id == dag_id,
            rows.run_id == run_id,
            rows.task_id == task_id,
            rows.map_index == map_index,
            *where,
        )
    )


def expand_mapped_task(session: Any, task: Any, run_id: str) -> None:
    """Create the task instances of every index of ``task`` in ``run_id``, as Airflow's scheduler does."""
    from sqlalchemy import select

    if has_task_map_table():
        from airflow.models.taskmap import TaskMap

        TaskMap.expand_mapped_task(task, run_id, session=session)
        return
    from airflow.models.taskinstance import TaskInstance

    placeholder = session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == task.dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task.task_id,
            TaskInstance.map_index == -1,
        )
    )
    if placeholder is not None:
        placeholder.task = task
        placeholder.expand_mapped_task(session=session)
