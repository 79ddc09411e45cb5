"""The scheduling loop shared by the standalone and the deep workflow.

Each turn asks Airflow (through :class:`LocalDagRun`) which task instances may run, starts them as
``run_airflow_task`` activities in parallel (never more than the DAG's ``max_active_tasks``), and
feeds every finished try back to Airflow. Retry waits are durable workflow timers computed by
Airflow's ``next_retry_datetime``; Airflow's runner decides between ``failed`` and ``up_for_retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from temporal_airflow.models import (
    RUN_TASK_ACTIVITY,
    ActivityTaskInput,
    DagExecutionResult,
    RunProgress,
    TaskExecutionResult,
    XComEntry,
)
from temporal_airflow.workflows.local_run import LocalDagRun, ReadyTask, TaskKey

#: Extra time granted beyond a task's own ``execution_timeout`` (Airflow enforces that one itself).
_TIMEOUT_GRACE = timedelta(minutes=2)
#: A task without ``execution_timeout`` may run this long; liveness is guarded by heartbeats.
_NO_TIMEOUT = timedelta(days=365)
#: How long to wait before re-asking Airflow when nothing runs and no retry is pending.
_IDLE_RECHECK = timedelta(seconds=5)
#: Worker crashes are retried by Temporal on the same Airflow try, at most this many times.
_INFRA_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)

TurnHook = Callable[[], None]


@dataclass
class DriverOptions:
    """How task activities are started."""

    dag_path: str
    activity_task_queue: str
    heartbeat_timeout: timedelta
    variables: dict[str, str] = field(default_factory=dict)
    deep_integration: bool = False


class DagRunDriver:
    """Runs a :class:`LocalDagRun` to its final state."""

    def __init__(self, local: LocalDagRun, options: DriverOptions, after_turn: TurnHook | None = None) -> None:
        self.local = local
        self.options = options
        self.after_turn = after_turn
        self.xcoms: dict[TaskKey, list[XComEntry]] = {}
        self.errors: dict[TaskKey, str] = {}
        self._running: dict[TaskKey, asyncio.Task[None]] = {}
        self._finished: list[tuple[TaskKey, TaskExecutionResult | None, str | None]] = []

    async def run(self) -> str:
        """Schedule until Airflow declares the run finished; returns its state."""
        try:
            while True:
                capacity = self.local.max_active_tasks - len(self._running)
                ready, progressed = self.local.ready_tasks(capacity)
                for task in ready:
                    self._start(task)
                if self.after_turn is not None:
                    self.after_turn()
                if self.local.finished:
                    return self.local.state
                if not progressed:
                    await self._wait_for_progress()
                self._apply_finished()
        except asyncio.CancelledError:
            await self._cancel_running()
            raise

    def progress(self) -> RunProgress:
        """Per-task states as they are now (for the ``progress`` query)."""
        run = self.local.dag_run
        return RunProgress(
            dag_id=run.dag_id,
            run_id=run.run_id,
            state=self.local.state,
            tasks=self.local.summaries(self.xcoms, self.errors),
        )

    def result(self, state: str) -> DagExecutionResult:
        run = self.local.dag_run
        return DagExecutionResult(
            dag_id=run.dag_id,
            run_id=run.run_id,
            state=state,
            tasks=self.local.summaries(self.xcoms, self.errors),
            start_date=run.start_date,
            end_date=run.end_date,
        )

    async def _wait_for_progress(self) -> None:
        retry_at = self.local.next_retry_at()
        if not self._running and retry_at is None and not self._finished:
            # Nothing runs, nothing waits, yet Airflow keeps the run open: look again shortly
            # rather than spin (Airflow itself fails runs that are truly deadlocked).
            await workflow.sleep(_IDLE_RECHECK)
            return
        timeout = None
        if retry_at is not None:
            timeout = max((retry_at - workflow.now()).total_seconds(), 0.0) + 0.001
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: bool(self._finished), timeout=timeout)

    def _start(self, ready: ReadyTask) -> None:
        key = ready.key
        self.local.mark_running(key, workflow.now())
        task_input = ActivityTaskInput(
            dag_path=self.options.dag_path,
            task_id=key.task_id,
            map_index=key.map_index,
            try_number=ready.try_number,
            max_tries=ready.max_tries,
            run=self.local.run_context(),
            upstream_xcoms=self._upstream_xcoms(key.task_id),
            variables=self.options.variables,
            deep_integration=self.options.deep_integration,
        )
        self._running[key] = asyncio.create_task(self._execute(key, task_input))

    def _upstream_xcoms(self, task_id: str) -> list[XComEntry]:
        if self.options.deep_integration:
            return []  # tasks pull XComs from Airflow's DB
        ancestors = set(self.local.ancestors(task_id))
        return [entry for key, entries in sorted(self.xcoms.items()) if key.task_id in ancestors for entry in entries]

    async def _execute(self, key: TaskKey, task_input: ActivityTaskInput) -> None:
        execution_timeout = self.local.task_attribute(key.task_id, "execution_timeout")
        start_to_close = execution_timeout + _TIMEOUT_GRACE if execution_timeout else _NO_TIMEOUT
        try:
            result = await workflow.execute_activity(
                RUN_TASK_ACTIVITY,
                task_input,
                result_type=TaskExecutionResult,
                task_queue=self.options.activity_task_queue,
                activity_id=key.activity_id(task_input.try_number),
                start_to_close_timeout=start_to_close,
                heartbeat_timeout=self.options.heartbeat_timeout,
                retry_policy=_INFRA_RETRY,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._finished.append((key, result, None))
        except ActivityError as err:
            cause = err.cause or err
            self._finished.append((key, None, f"{type(cause).__name__}: {cause}"))

    def _apply_finished(self) -> None:
        finished, self._finished = self._finished, []
        for key, result, failure in finished:
            self._running.pop(key, None)
            if result is not None:
                self.local.record_result(result)
                if result.xcoms:
                    self.xcoms[key] = result.xcoms
                if result.error:
                    self.errors[key] = result.error
                else:
                    self.errors.pop(key, None)
            else:
                self.local.record_lost_try(key, workflow.now())
                self.errors[key] = f"task could not be executed: {failure}"
                workflow.logger.warning("Task %s lost: %s", key, failure)

    async def _cancel_running(self) -> None:
        for task in self._running.values():
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        self.local.fail_unfinished(workflow.now())
