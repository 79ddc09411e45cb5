"""Activities that parse DAG files and execute Airflow tasks on the activity worker."""

from __future__ import annotations

import os
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.child import ChildFailed, run_in_child
from temporal_airflow.models import (
    LOAD_DAG_FILE_ACTIVITY,
    RUN_TASK_ACTIVITY,
    XCOM_TOO_LARGE_ERROR,
    ActivityTaskInput,
    LoadDagFileInput,
    LoadDagFileResult,
    TaskExecutionResult,
)

#: Upper bound for the XComs of one try; Temporal payloads are capped at 2 MiB.
MAX_XCOM_BYTES = int(os.environ.get("TEMPORAL_AIRFLOW_MAX_XCOM_BYTES", 512 * 1024))


def task_log_path(task_input: ActivityTaskInput) -> str:
    """Where the try's log goes: Airflow's own layout under ``$AIRFLOW_HOME/logs``."""
    base = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER") or os.path.join(
        os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "logs"
    )
    run = task_input.run
    map_part = "" if task_input.map_index < 0 else f"/map_index={task_input.map_index}"
    return str(
        Path(base)
        / f"dag_id={run.dag_id}"
        / f"run_id={run.run_id}"
        / f"task_id={task_input.task_id}{map_part}"
        / f"attempt={task_input.try_number}.log"
    )


@activity.defn(name=LOAD_DAG_FILE_ACTIVITY)
async def load_dag_file(task: LoadDagFileInput) -> LoadDagFileResult:
    """Parse a DAG file; an import error or unknown DAG id is a non-retryable error naming both."""
    try:
        value = await run_in_child("dag", task)
    except ChildFailed as err:
        raise ApplicationError(str(err), type=err.kind, non_retryable=err.kind != "ChildProcessError") from None
    return LoadDagFileResult(**value)


@activity.defn(name=RUN_TASK_ACTIVITY)
async def run_airflow_task(task: ActivityTaskInput) -> TaskExecutionResult:
    """Run one try of one task through Airflow's task runner, in its own process.

    A failing task is a *result* (state ``failed`` or ``up_for_retry`` with its error), not an
    activity failure: only a lost worker makes Temporal retry this activity.
    """
    log_path = task_log_path(task)
    activity.logger.info("Running %s.%s try %s (log: %s)", task.run.dag_id, task.task_id, task.try_number, log_path)
    try:
        result: TaskExecutionResult = await run_in_child("task", task, log_path=log_path)
    except ChildFailed as err:
        raise ApplicationError(str(err), type=err.kind) from None
    return _enforce_xcom_limit(result)


def _enforce_xcom_limit(result: TaskExecutionResult) -> TaskExecutionResult:
    size = sum(len(x.value_json.encode()) for x in result.xcoms)
    if size <= MAX_XCOM_BYTES:
        return result
    keys = ", ".join(sorted({x.key for x in result.xcoms}))
    result.state = "failed"
    result.error = (
        f"{XCOM_TOO_LARGE_ERROR}: task {result.task_id} pushed {size} bytes of XCom ({keys}); the limit is "
        f"{MAX_XCOM_BYTES} bytes (TEMPORAL_AIRFLOW_MAX_XCOM_BYTES). Store large data externally and "
        "pass a reference."
    )
    result.xcoms = []
    return result
