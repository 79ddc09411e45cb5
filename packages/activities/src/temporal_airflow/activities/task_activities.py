"""Activities that parse DAG files and execute Airflow tasks on the activity worker."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.converter import PayloadCodec, StorageDriver
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.task_host_client import ChildFailed, run_in_child
from temporal_airflow.activities.xcom_refs import STORED_XCOM_REFUSED_ERROR, StoredXComRefused, XComRefs
from temporal_airflow.models import (
    LOAD_DAG_FILE_ACTIVITY,
    RUN_TASK_ACTIVITY,
    TASK_PROCESS_DIED_ERROR,
    ActivityTaskInput,
    LoadDagFileInput,
    LoadDagFileResult,
    TaskExecutionResult,
)
from temporal_airflow.models.codec import DecryptionError
from temporal_airflow.models.converter import StoredPayloadAltered

#: Longest file name most file systems take, in bytes.
_NAME_MAX = 255


def _log_folder(key: str, value: str) -> str:
    """``key=value`` as Airflow names its log folders; a name over the file system's 255-byte limit (a
    250-character run id is legal) keeps a readable prefix and ends with a hash of the whole value."""
    name = f"{key}={value}"
    if len(name.encode()) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    room = _NAME_MAX - len(f"{key}=~{digest}".encode())
    prefix = value.encode()[:room].decode(errors="ignore")
    return f"{key}={prefix}~{digest}"


def task_log_path(task_input: ActivityTaskInput) -> str:
    """Where the try's log goes: Airflow's own layout under ``$AIRFLOW_HOME/logs``."""
    base = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER") or os.path.join(
        os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "logs"
    )
    run = task_input.run
    task_folder = _log_folder("task_id", task_input.task_id)
    map_part = "" if task_input.map_index < 0 else f"/map_index={task_input.map_index}"
    return str(
        Path(base)
        / _log_folder("dag_id", run.dag_id)
        / _log_folder("run_id", run.run_id)
        / f"{task_folder}{map_part}"
        / f"attempt={task_input.try_number}.log"
    )


class TaskActivities:
    """DAG parsing and task tries; ``storage`` is the payload store large XCom values go to, through
    ``codec`` (the data converter's: encryption)."""

    def __init__(self, storage: StorageDriver | None = None, codec: PayloadCodec | None = None) -> None:
        self.xcom_refs = XComRefs(storage, codec)

    def activities(self) -> list[Callable[..., Any]]:
        return [self.load_dag_file, self.run_airflow_task]

    @activity.defn(name=LOAD_DAG_FILE_ACTIVITY)
    async def load_dag_file(self, task: LoadDagFileInput) -> LoadDagFileResult:
        """Parse a DAG file; an import error or unknown DAG id is a non-retryable error naming both."""
        try:
            value = await run_in_child("dag", task, dag_path=task.dag_path)
        except ChildFailed as err:
            raise ApplicationError(str(err), type=err.kind, non_retryable=err.kind != "ChildProcessError") from None
        return LoadDagFileResult(**value)

    @activity.defn(name=RUN_TASK_ACTIVITY)
    async def run_airflow_task(self, task: ActivityTaskInput) -> TaskExecutionResult:
        """Run one try of one task through Airflow's task runner, in its own process.

        A failing task is a *result* (state ``failed`` or ``up_for_retry`` with its error), not an
        activity failure. A task process that dies without an outcome is a non-retryable error (the
        workflow counts it as one failed try); only a lost worker makes Temporal retry this activity.
        """
        log_path = task_log_path(task)
        activity.logger.info("Running %s.%s try %s (log: %s)", task.run.dag_id, task.task_id, task.try_number, log_path)
        try:
            upstream_xcoms = await self.xcom_refs.resolve(task.upstream_xcoms)
        except (StoredXComRefused, StoredPayloadAltered, DecryptionError) as err:
            # Not retryable: the stored value or its reference will not become right (fails the try).
            raise ApplicationError(str(err), type=STORED_XCOM_REFUSED_ERROR, non_retryable=True) from None
        task = dataclasses.replace(task, upstream_xcoms=upstream_xcoms, delivery_attempt=activity.info().attempt)
        try:
            result: TaskExecutionResult = await run_in_child("task", task, log_path=log_path, dag_path=task.dag_path)
        except ChildFailed as err:
            raise ApplicationError(str(err), type=err.kind, non_retryable=err.kind == TASK_PROCESS_DIED_ERROR) from None
        return await self.xcom_refs.offload(result)
