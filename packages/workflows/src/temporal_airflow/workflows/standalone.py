"""``ExecuteAirflowDagWorkflow``: one DAG run from a DAG file, with no Airflow services at all.

A long run continues as new with a :class:`RunSnapshot` of itself (same workflow id); the next execution
resumes from it without parsing the DAG file again, so the run keeps the DAG version it started with.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from temporal_airflow.models import (
    DAG_IMPORT_ERROR,
    DAG_NOT_FOUND_ERROR,
    DEFAULT_ACTIVITY_TASK_QUEUE,
    LOAD_DAG_FILE_ACTIVITY,
    MARK_TASK_SIGNAL,
    STANDALONE_WORKFLOW,
    DagExecutionInput,
    DagExecutionResult,
    LoadDagFileInput,
    LoadDagFileResult,
    RunProgress,
    TaskMark,
    service_task_queue,
)
from temporal_airflow.workflows import summaries
from temporal_airflow.workflows.driver import ContinueAsNew, DagRunDriver
from temporal_airflow.workflows.errors import workflow_failure
from temporal_airflow.workflows.local_run import LocalDagRun, create_local_run, resume_local_run
from temporal_airflow.workflows.tries import DriverOptions


@workflow.defn(name=STANDALONE_WORKFLOW, sandboxed=False)
class ExecuteAirflowDagWorkflow:
    """Parses the DAG on an activity worker, then schedules it with Airflow's own logic."""

    def __init__(self) -> None:
        self._driver: DagRunDriver | None = None
        self._marks: list[TaskMark] = []
        self._dag_id = ""

    @workflow.run
    async def run(self, input: DagExecutionInput) -> DagExecutionResult:
        activity_queue = input.activity_task_queue or DEFAULT_ACTIVITY_TASK_QUEUE
        resume = input.resume
        local: LocalDagRun
        if resume is None:
            loaded = await self._load_dag(input, activity_queue)
            self._dag_id, fileloc = loaded.dag_id, loaded.fileloc
            local = create_local_run(
                loaded.serialized_dag, run_id=input.run_id, logical_date=input.logical_date, conf=input.conf
            )
        else:
            self._dag_id, fileloc = resume.run.dag_id, resume.fileloc
            carried = summaries.snapshot_tasks(resume)
            local = resume_local_run(resume.run, resume.serialized_dag, carried)
        self._driver = DagRunDriver(
            local,
            DriverOptions(
                dag_path=fileloc,
                activity_task_queue=activity_queue,
                heartbeat_timeout=timedelta(seconds=input.task_heartbeat_timeout_seconds),
                variables=input.variables,
                replay_budget=input.replay_budget,
            ),
            generation=resume.generation if resume else 0,
            marks=self._marks,
        )
        if resume is not None:
            self._driver.carry(carried)
        try:
            state = await self._driver.run()
        except ContinueAsNew as cont:
            workflow.continue_as_new(dataclasses.replace(input, resume=cont.snapshot))
        return self._driver.result(state)

    async def _load_dag(self, input: DagExecutionInput, activity_queue: str) -> LoadDagFileResult:
        """Parse the DAG file on an activity worker; import errors fail the run at once."""
        try:
            loaded: LoadDagFileResult = await workflow.execute_activity(
                LOAD_DAG_FILE_ACTIVITY,
                LoadDagFileInput(dag_path=input.dag_path, dag_id=input.dag_id),
                result_type=LoadDagFileResult,
                task_queue=service_task_queue(activity_queue),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(
                    maximum_attempts=3, non_retryable_error_types=[DAG_IMPORT_ERROR, DAG_NOT_FOUND_ERROR]
                ),
                summary=f"parse {input.dag_path}",
            )
        except ActivityError as err:
            raise workflow_failure(err) from err
        return loaded

    @workflow.signal(name=MARK_TASK_SIGNAL)
    def mark_task(self, mark: TaskMark) -> None:
        """A user marked a task instance in Airflow's UI or REST API; the run goes on from that state."""
        self._marks.append(mark)

    @workflow.query(name="progress")
    def progress(self) -> RunProgress:
        """Live per-task states of this run."""
        if self._driver is None:
            return RunProgress(dag_id=self._dag_id, run_id="", state="queued")
        return self._driver.progress()
