"""Code that runs in the child process of one task try (or one DAG-file parse, or one deferred task's
trigger: :mod:`temporal_airflow.activities.trigger_activities`).

A fresh process per try keeps tries apart: module globals of the Task SDK's runner, the DAG file's
own globals, environment variables and signal handlers never leak between concurrent tasks, and a
task that hangs or crashes takes nothing else down. Children are forked from a *forkserver* that has
Airflow pre-imported, so a try starts in milliseconds rather than seconds; a try of a DAG the host has
seen is forked from a process that already parsed its file (:mod:`temporal_airflow.activities.task_host`),
so each try starts from its own pristine copy of the parsed DAG instead of importing the file again.

Whatever a child sends back may enter workflow history, so its error texts go through Airflow's secrets
masker first: the passwords of the connections and the values of the sensitive variables the task read
(registered with the masker in this process when they were read) come back as ``***``.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import traceback
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any

from temporal_airflow.activities.dag_paths import DAG_OUTSIDE_FOLDERS_ERROR, DagPathRefused, check_dag_path
from temporal_airflow.activities.deep_tries import queue_try, task_instance
from temporal_airflow.activities.execution_api import RecordingTransport, StandaloneExecutionAPI
from temporal_airflow.activities.trigger_activities import describe_deferral, run_trigger
from temporal_airflow.models import (
    DAG_IMPORT_ERROR,
    DAG_NOT_FOUND_ERROR,
    ActivityTaskInput,
    LoadDagFileInput,
    TaskExecutionResult,
    XComEntry,
)

#: States a try ends in. Airflow's DB holding one of them for a try means that try ran to its end.
_ENDED_STATES = frozenset({"success", "failed", "up_for_retry", "skipped", "upstream_failed", "removed"})


class ChildError(Exception):
    """An error that retrying cannot fix (bad DAG file, unknown DAG); ``kind`` is its error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


#: The DAGs of the file this process parsed ahead of the children forked from it: (path, DAG id) -> DAG
#: (and (path, ``None``) -> DAG when the file defines one DAG).
_parsed: dict[tuple[str, str | None], Any] = {}


def load_dag(dag_path: str, dag_id: str | None) -> Any:
    """Parse a DAG file with Airflow's DagBag; import errors name the file and the error.

    Only files inside the worker's DAG folders are imported (:mod:`temporal_airflow.activities.dag_paths`).
    A DAG :func:`parse_ahead` parsed before this process was forked is not parsed again.
    """
    _check_path(dag_path)
    if (parsed := _parsed.get((dag_path, dag_id))) is not None:
        return parsed
    dags = _parse(dag_path)
    if dag_id is None:
        if len(dags) != 1:
            found = ", ".join(sorted(dags)) or "none"
            raise ChildError(DAG_NOT_FOUND_ERROR, f"{dag_path} defines {len(dags)} DAGs ({found}); pass --dag-id")
        return next(iter(dags.values()))
    if dag_id not in dags:
        found = ", ".join(sorted(dags)) or "none"
        raise ChildError(DAG_NOT_FOUND_ERROR, f"DAG {dag_id!r} not found in {dag_path} (found: {found})")
    return dags[dag_id]


def _check_path(dag_path: str) -> None:
    try:
        check_dag_path(dag_path)
    except DagPathRefused as err:
        raise ChildError(DAG_OUTSIDE_FOLDERS_ERROR, str(err)) from None


def _parse(dag_path: str) -> dict[str, Any]:
    """Every DAG of the file, by id."""
    from airflow.dag_processing.dagbag import DagBag

    if not os.path.exists(dag_path):
        raise ChildError(DAG_IMPORT_ERROR, f"DAG file not found: {dag_path}")
    bag = DagBag(dag_folder=dag_path, safe_mode=False)
    if bag.import_errors:
        errors = "; ".join(f"{path}: {err.strip()}" for path, err in bag.import_errors.items())
        raise ChildError(DAG_IMPORT_ERROR, f"DAG file {dag_path} failed to import: {errors}")
    return dict(bag.dags)


def parse_ahead(dag_path: str) -> None:
    """Parse a DAG file for the children this process will fork. A file that fails to parse is left for
    each child to parse again and report, as without this."""
    try:
        _check_path(dag_path)
        dags = _parse(dag_path)
    except Exception:  # the children report it
        return
    for dag_id, dag in dags.items():
        _parsed[(dag_path, dag_id)] = dag
    if len(dags) == 1:
        _parsed[(dag_path, None)] = next(iter(dags.values()))


@functools.cache
def hostname() -> str:
    """This machine's name as tries report it (looked up once, in the task host)."""
    return socket.getfqdn()


def serialize_dag_file(task: LoadDagFileInput) -> dict[str, Any]:
    """Child entry point: the DAG in Airflow's serialized form."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_dag(task.dag_path, task.dag_id)
    dag.validate()
    return {
        "dag_id": dag.dag_id,
        "fileloc": os.path.abspath(dag.fileloc),
        "serialized_dag": DagSerialization.to_dict(dag),
    }


def _standalone_client(task: ActivityTaskInput) -> tuple[Any, RecordingTransport, uuid.UUID, uuid.UUID]:
    """Execution API answered from the activity input; fresh ids (there is no TaskInstance row)."""
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    transport = StandaloneExecutionAPI(task).transport()
    client = InProcessTestSupervisor._Client(base_url=None, dry_run=True, token="", transport=transport)
    return client, transport, uuid.uuid4(), uuid.uuid4()


def trigger_client(task: ActivityTaskInput) -> Any:
    """The Execution API a deferred task's trigger reads connections and variables from: the task's."""
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

    if task.deep_integration:
        _fresh_orm()
        return InProcessTestSupervisor._api_client()
    return _standalone_client(task)[0]


def _fresh_orm() -> None:
    """Never share the forked parent's DB connections."""
    from airflow import settings

    settings.dispose_orm()
    settings.configure_orm()


def _recorded_outcome(task: ActivityTaskInput, downstream_task_ids: set[str]) -> TaskExecutionResult | None:
    """The outcome Airflow's DB holds for this try, if it already ended.

    Temporal redelivers an activity whose completion was lost (worker died just after the try, timeout
    while reporting): the try must not run a second time, its recorded outcome is the result. A first
    delivery has nothing to find, so only redeliveries ask. The try's
    mapped length (for downstream mapping) and the direct downstream tasks it skipped are read back too.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskmap import TaskMap
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run = task.run
    with create_session() as session:
        ti = task_instance(session, task)
        if ti is None or ti.try_number != task.try_number or _plain(ti.state) not in _ENDED_STATES:
            return None
        state = _plain(ti.state)
        mapped_length = session.scalar(
            select(TaskMap.length).where(
                TaskMap.dag_id == run.dag_id,
                TaskMap.run_id == run.run_id,
                TaskMap.task_id == task.task_id,
                TaskMap.map_index == task.map_index,
            )
        )
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
            if mapped_length is None
            else [
                XComEntry(task.task_id, "return_value", "null", map_index=task.map_index, mapped_length=mapped_length)
            ],
            skipped_task_ids=sorted(set(skipped)),
            error=f"try {task.try_number} had already ended {state} when its activity was delivered again; it was "
            "not run again (its error is in its log)"
            if state in ("failed", "up_for_retry")
            else None,
            hostname=ti.hostname,
        )


def _deep_client(task: ActivityTaskInput) -> tuple[Any, RecordingTransport, uuid.UUID, uuid.UUID]:
    """Airflow's own Execution API on the metadata DB; the TaskInstance row is queued for this try.

    The runner then marks it ``running`` (start date, hostname, pid), writes XComs and the final state
    through Airflow's API code, so the UI and REST API see the try as it happens, and connections and
    variables are read from the DB (and any secrets backend) as under Airflow's own workers.
    """
    from airflow.api_fastapi.common.dagbag import dag_bag_from_app
    from airflow.models.dagbag import DBDagBag
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor, in_process_api_server
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
    api = in_process_api_server()
    api.app.dependency_overrides[dag_bag_from_app] = DBDagBag
    transport = RecordingTransport(api.transport, keep_xcom_values=False)
    client = InProcessTestSupervisor._Client(base_url=None, dry_run=True, token="", transport=transport)
    client.base_url = "http://in-process.invalid./"  # type: ignore[assignment]
    return client, transport, ti_id, dag_version_id


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


def run_task_try(task: ActivityTaskInput) -> TaskExecutionResult:
    """Child entry point: one try of one task through Airflow's own task runner."""
    from airflow.sdk.api.datamodels._generated import TaskInstance as SdkTaskInstance
    from airflow.sdk.execution_time.supervisor import run_task_in_process

    started = datetime.now(UTC)
    host = hostname()

    def failed(error: str, tb: str | None = None) -> TaskExecutionResult:
        return TaskExecutionResult(
            task_id=task.task_id,
            map_index=task.map_index,
            try_number=task.try_number,
            state="failed",
            start_date=started,
            end_date=datetime.now(UTC),
            error=error,
            traceback=tb,
            hostname=host,
        )

    try:
        dag = load_dag(task.dag_path, task.run.dag_id)
        operator = dag.get_task(task.task_id)
    except ChildError as err:
        return failed(str(err))
    except Exception as err:
        return failed(f"{type(err).__name__}: {err}", traceback.format_exc())

    if task.deep_integration:
        _fresh_orm()
        redelivered = task.delivery_attempt > 1
        if redelivered and (recorded := _recorded_outcome(task, set(operator.downstream_task_ids))) is not None:
            return recorded
        client, transport, ti_id, dag_version_id = _deep_client(task)
    else:
        client, transport, ti_id, dag_version_id = _standalone_client(task)
    sdk_ti = SdkTaskInstance(
        id=ti_id,
        task_id=task.task_id,
        dag_id=task.run.dag_id,
        run_id=task.run.run_id,
        try_number=task.try_number,
        map_index=task.map_index,
        dag_version_id=dag_version_id,
    )
    outcome = run_task_in_process(ti=sdk_ti, task=operator, client=client)
    if transport.outcome.undelivered_state is not None:
        # The API never recorded how the try ended: fail the activity, Temporal retries it.
        raise RuntimeError(
            f"Airflow's Execution API did not record state {transport.outcome.undelivered_state!r} for "
            f"{task.run.dag_id}.{task.task_id} try {task.try_number}"
        )
    error = outcome.error
    reported = transport.outcome
    ended = datetime.now(UTC)
    if task.deep_integration and reported.deferral is not None:
        _release_trigger(task)
    return TaskExecutionResult(
        task_id=task.task_id,
        map_index=task.map_index,
        try_number=task.try_number,
        state=transport.outcome.state or _plain(outcome.state),
        start_date=outcome.ti.start_date or started,
        end_date=ended,
        xcoms=list(transport.outcome.pushed_xcoms.values()),
        skipped_task_ids=sorted(set(transport.outcome.skipped_task_ids)),
        retry_delay_seconds=transport.outcome.retry_delay_seconds,
        error=None if error is None else _describe_error(error),
        traceback=None
        if error is None
        else "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        hostname=host,
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


#: What every try imports, imported once in the task host: Airflow's parser and task runner, the Task
#: SDK's decorators (and the standard provider's operators they bring), the template environment's
#: extensions, the codec httpx looks host names up with.
_WARM_MODULES = (
    "a2wsgi",
    "airflow.dag_processing.dagbag",
    "anyio._backends._asyncio",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk.definitions.asset.metadata",
    "airflow.sdk.definitions.decorators",
    "airflow.serialization.serialized_objects",
    "encodings.idna",
    "httpx",
    "jinja2.ext",
)


def preload() -> None:
    """Import (and build) what every child needs, once, in the task host, so forks start warm."""
    for module in _WARM_MODULES:
        importlib.import_module(module)
    from airflow.sdk.listener import get_listener_manager
    from airflow.sdk.plugins_manager import integrate_macros_plugins

    # Airflow's in-process Execution API sits on Starlette's TestClient, which warns about httpx on
    # every start; the warning is about Airflow's internals, not the user's DAG, so keep logs clean.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    integrate_macros_plugins()  # loads Airflow's plugins (tens of ms a try otherwise)
    get_listener_manager()  # and registers their listeners (a few ms a try otherwise)
    hostname()
    _configure_orm_mappers()
    if os.environ.get("TEMPORAL_AIRFLOW_PRELOAD_EXECUTION_API", "1") == "1":
        _build_execution_api()


def _configure_orm_mappers() -> None:
    """Configure SQLAlchemy's mappers of every Airflow model once, before forking.

    SQLAlchemy configures mappers lazily, at a process's first query; Airflow's ~60 models take
    ~0.6 s of CPU to configure (event listeners on every relationship), which a deep-mode try would
    otherwise pay before its first DB read.
    """
    from airflow.models import import_all_models
    from sqlalchemy.orm import configure_mappers

    import_all_models()
    configure_mappers()


def _build_execution_api() -> None:
    """Build Airflow's in-process Execution API app (seconds of route generation) before forking.

    Only the app is built here; its transport (which starts a thread) is created in each child.
    """
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app
    initialize = getattr(app, "_cadwyn_initialize", None)
    if callable(initialize) and not getattr(app, "_cadwyn_initialized", True):
        initialize()


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
