"""``ExecuteAirflowDagDeepWorkflow``: a DAG run against a real Airflow deployment's metadata DB.

The same scheduling code as the standalone workflow (an in-workflow DB and Airflow's own
``update_state``), plus the deep-integration steps: the DAG comes from Airflow's DB, the DagRun and
its TaskInstances live there too, tasks run against Airflow's Execution API on that DB (so the UI shows
each try as it runs, and hooks read connections from the DB), and every state Airflow's logic decides
in the workflow (skips, upstream failures, empty tasks) is mirrored to the DB by retried sync
activities. A DB outage delays the mirror, never the run's outcome; the DB converges once it is back
(DB activities give up after ``_DB_GIVE_UP``: the run then fails visibly instead of waiting forever).

A long run continues as new with a :class:`RunSnapshot` once every state is mirrored; the next execution
resumes from it with the same DAG version, without touching the DB first.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

from airflow.models.dagrun import DagRun
from airflow.utils.types import DagRunType
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from temporal_airflow.models import (
    CREATE_DAGRUN_ACTIVITY,
    DAG_NOT_FOUND_ERROR,
    DEEP_WORKFLOW,
    ENSURE_TASK_INSTANCES_ACTIVITY,
    INVALID_CONF_ERROR,
    LOAD_PREVIOUS_RUN_ACTIVITY,
    LOAD_SERIALIZED_DAG_ACTIVITY,
    MARK_TASK_SIGNAL,
    RUN_CLEARED_SIGNAL,
    START_DEEP_RUN_ACTIVITY,
    SYNC_DAGRUN_STATUS_ACTIVITY,
    SYNC_TASK_STATUS_ACTIVITY,
    CreateDagRunInput,
    CreateDagRunResult,
    DagExecutionResult,
    DagRunStatusSync,
    DeepDagExecutionInput,
    EnsureTaskInstancesInput,
    LoadSerializedDagInput,
    LoadSerializedDagResult,
    PreviousRun,
    PreviousRunInput,
    PreviousRunResult,
    RunProgress,
    StartDeepRunResult,
    TaskInstancesSnapshot,
    TaskMark,
    TaskStatusSync,
    TaskStatusSyncBatch,
    service_task_queue,
)
from temporal_airflow.workflows import summaries
from temporal_airflow.workflows.driver import ContinueAsNew, DagRunDriver
from temporal_airflow.workflows.errors import workflow_failure
from temporal_airflow.workflows.local_run import LocalDagRun, create_local_run, resume_local_run
from temporal_airflow.workflows.tries import DriverOptions
from temporal_airflow.workflows.values import TaskKey

#: DB activities are retried while the DB is away (an outage must not fail the run), up to a bound.
_DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
    non_retryable_error_types=[DAG_NOT_FOUND_ERROR, INVALID_CONF_ERROR],
)
_DB_GIVE_UP = timedelta(minutes=30)
#: Patch id: a run starts with one ``start_deep_run`` activity instead of four round trips.
_ONE_START_ACTIVITY = "one-start-activity"
#: States of a try the workflow has under way (the DB may not show them yet): never taken for a clear.
_IN_FLIGHT_HERE = frozenset({None, "scheduled", "queued", "running"})
#: States the activity itself writes through Airflow's Execution API; the mirror skips them.
_WRITTEN_BY_TASK = frozenset({None, "scheduled", "queued", "running", "deferred", "up_for_reschedule"})


@workflow.defn(name=DEEP_WORKFLOW, sandboxed=False)
class ExecuteAirflowDagDeepWorkflow:
    """Runs one DagRun of a DAG already known to Airflow's DB, keeping that DB in step."""

    def __init__(self) -> None:
        self._driver: DagRunDriver | None = None
        self._marks: list[TaskMark] = []
        self._queue = ""
        self._dag_id = ""
        self._run_id = ""
        self._mirrored: dict[TaskKey, tuple[str | None, int]] = {}
        self._pending: list[TaskStatusSync] = []
        self._syncing = False
        self._previous: PreviousRun | None = None
        self._clears: list[int] = []

    @workflow.run
    async def run(self, input: DeepDagExecutionInput) -> DagExecutionResult:
        self._queue = input.activity_task_queue
        self._dag_id = input.dag_id
        resume = input.resume
        if resume is None:
            local, fileloc = await self._start_run(input)
        else:
            self._run_id, fileloc = resume.run.run_id, resume.fileloc
            carried = summaries.snapshot_tasks(resume)
            local = resume_local_run(resume.run, resume.serialized_dag, carried)
            self._mirrored = {TaskKey(s.task_id, s.map_index): (s.state, s.try_number) for s in carried}
        past_dependent = local.past_dependent_task_ids()
        if past_dependent:
            await self._load_previous_run(local, past_dependent)
        self._driver = DagRunDriver(
            local,
            DriverOptions(
                dag_path=fileloc,
                activity_task_queue=self._queue,
                heartbeat_timeout=timedelta(seconds=input.task_heartbeat_timeout_seconds),
                deep_integration=True,
                replay_budget=input.replay_budget,
            ),
            after_turn=self._mirror,
            generation=resume.generation if resume else 0,
            marks=self._marks,
            before_recheck=(lambda: self._refresh_previous_run(local, past_dependent)) if past_dependent else None,
        )
        syncer = asyncio.create_task(self._sync_loop())
        clears = asyncio.create_task(self._follow_clears())
        try:
            state = await self._driver.run()
        except ContinueAsNew as cont:
            clears.cancel()
            await self._flush_mirror()
            syncer.cancel()
            workflow.continue_as_new(dataclasses.replace(input, run_id=self._run_id, resume=cont.snapshot))
        clears.cancel()
        await self._flush_mirror()
        syncer.cancel()
        await self._db(
            SYNC_DAGRUN_STATUS_ACTIVITY,
            DagRunStatusSync(input.dag_id, self._run_id, state, end_date=local.dag_run.end_date),
        )
        return self._driver.result(state)

    async def _start_run(self, input: DeepDagExecutionInput) -> tuple[LocalDagRun, str]:
        """Load the DAG, create or find the DagRun and its task instances, take over their states."""
        now = workflow.now()
        logical_date = input.logical_date or now
        run_id = input.run_id or DagRun.generate_run_id(
            run_type=DagRunType.MANUAL, logical_date=logical_date, run_after=now
        )
        self._run_id = run_id
        request = CreateDagRunInput(dag_id=input.dag_id, logical_date=logical_date, run_id=run_id, conf=input.conf)
        one_start = workflow.patched(_ONE_START_ACTIVITY)
        if one_start:
            started = await self._db(START_DEEP_RUN_ACTIVITY, request, StartDeepRunResult)
            loaded, created, snapshot = started.dag, started.run, started.task_instances
        else:  # histories recorded before the four activities became one
            loaded = await self._db(
                LOAD_SERIALIZED_DAG_ACTIVITY, LoadSerializedDagInput(input.dag_id), LoadSerializedDagResult
            )
            created = await self._db(CREATE_DAGRUN_ACTIVITY, request, CreateDagRunResult)
            snapshot = await self._db(
                ENSURE_TASK_INSTANCES_ACTIVITY, EnsureTaskInstancesInput(input.dag_id, run_id), TaskInstancesSnapshot
            )
        context = created.run_context
        assert context is not None
        local = create_local_run(
            loaded.serialized_dag,
            run_id=context.run_id,
            logical_date=context.logical_date,
            conf=context.conf,
            run_type=context.run_type,
            run_after=context.run_after,
            start_date=context.start_date,  # when Airflow started the run: dagrun_timeout counts from it
        )
        # A cleared run keeps what already ran: only tasks without a final state run again.
        local.restore(snapshot.tasks)
        for summary in snapshot.tasks:
            self._mirrored[TaskKey(summary.task_id, summary.map_index)] = (summary.state, summary.try_number)
        if not one_start:
            await self._db(SYNC_DAGRUN_STATUS_ACTIVITY, DagRunStatusSync(input.dag_id, run_id, "running"))
        return local, loaded.fileloc

    async def _load_previous_run(self, local: LocalDagRun, task_ids: list[str]) -> None:
        """``depends_on_past`` / ``wait_for_downstream``: bring the previous run's states from Airflow's DB
        into the workflow's, where Airflow's own dependency check reads them."""
        found = await self._db(
            LOAD_PREVIOUS_RUN_ACTIVITY,
            PreviousRunInput(self._dag_id, self._run_id, task_ids, catchup=bool(local.dag.catchup)),
            PreviousRunResult,
        )
        self._previous = found.previous
        if self._previous is not None:
            local.set_previous_run(self._previous)

    async def _refresh_previous_run(self, local: LocalDagRun, task_ids: list[str]) -> None:
        """While the run waits with nothing to do, the previous run may still change (it runs, or a user
        marks or clears its tasks there, as Airflow users unblock a ``depends_on_past`` task): read it again."""
        if self._previous is not None:
            await self._load_previous_run(local, task_ids)

    async def _flush_mirror(self) -> None:
        self._mirror()
        await workflow.wait_condition(lambda: not self._pending and not self._syncing)

    @workflow.signal(name=MARK_TASK_SIGNAL)
    def mark_task(self, mark: TaskMark) -> None:
        """A user marked a task instance in Airflow's UI or REST API; the run goes on from that state."""
        self._marks.append(mark)

    @workflow.signal(name=RUN_CLEARED_SIGNAL)
    def run_cleared(self, clear_number: int) -> None:
        """Tasks of this running DagRun were cleared in Airflow (its clear number is now ``clear_number``)."""
        self._clears.append(clear_number)

    async def _follow_clears(self) -> None:
        """Run cleared tasks again, as Airflow's scheduler would, in this same workflow: whatever else runs
        meanwhile goes on untouched. A task is cleared when Airflow's DB has it without a state (or
        ``restarting``, if it was running) where the workflow had it settled; the run's memo then names
        the new clear number, which the orchestrator follows."""
        assert self._driver is not None
        while True:
            await workflow.wait_condition(lambda: bool(self._clears))
            number = max(self._clears)
            self._clears.clear()
            snapshot = await self._db(
                ENSURE_TASK_INSTANCES_ACTIVITY,
                EnsureTaskInstancesInput(self._dag_id, self._run_id),
                TaskInstancesSnapshot,
            )
            here = self._driver.local.states()
            for summary in snapshot.tasks:
                key = TaskKey(summary.task_id, summary.map_index)
                known = here.get(key, (None, 0))[0]
                if summary.state == "restarting" or (summary.state is None and known not in _IN_FLIGHT_HERE):
                    self._marks.append(TaskMark(summary.task_id, None, summary.map_index))
                    self._mirrored.pop(key, None)
            workflow.upsert_memo({"clear_number": number})

    @workflow.query(name="progress")
    def progress(self) -> RunProgress:
        """Live per-task states of this run."""
        if self._driver is None:
            return RunProgress(dag_id=self._dag_id, run_id=self._run_id, state="queued")
        return self._driver.progress()

    async def _db(self, activity: str, arg: Any, result_type: type | None = None) -> Any:
        try:
            return await workflow.execute_activity(
                activity,
                arg,
                result_type=result_type,
                task_queue=service_task_queue(self._queue),
                start_to_close_timeout=timedelta(minutes=1),
                schedule_to_close_timeout=_DB_GIVE_UP,
                retry_policy=_DB_RETRY,
                summary=activity,
            )
        except ActivityError as err:
            raise workflow_failure(err) from err

    def _mirror(self) -> None:
        """Queue every state the workflow decided that the DB does not have yet."""
        assert self._driver is not None
        local = self._driver.local
        for key, seen in local.states().items():
            if seen[0] in _WRITTEN_BY_TASK or self._mirrored.get(key) == seen:
                continue
            self._mirrored[key] = seen
            summary = local.summary(key)
            self._pending.append(
                TaskStatusSync(
                    dag_id=self._dag_id,
                    run_id=self._run_id,
                    task_id=summary.task_id,
                    map_index=summary.map_index,
                    state=summary.state or "",
                    try_number=summary.try_number,
                    start_date=summary.start_date,
                    end_date=summary.end_date,
                )
            )

    async def _sync_loop(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._pending))
            batch, self._pending = self._pending, []
            self._syncing = True
            try:
                await self._db(SYNC_TASK_STATUS_ACTIVITY, TaskStatusSyncBatch(updates=batch), int)
            finally:
                self._syncing = False
