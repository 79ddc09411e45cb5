"""The scheduling loop shared by the standalone and the deep workflow.

Each turn asks Airflow (through :class:`LocalDagRun`) which task instances may run, starts them as
``run_airflow_task`` activities in parallel (never more than the DAG's ``max_active_tasks``), and
feeds every finished try back to Airflow. A turn that changed anything is followed by another at once;
otherwise the loop waits for a try to finish or for the earliest retry, on a durable timer computed by
Airflow's ``next_retry_datetime`` (``retry_delay``, exponential backoff, ``max_retry_delay`` and a
``retry_policy``'s delay). Airflow's runner decides between ``failed`` and ``up_for_retry``. When
capacity is short the highest ``priority_weight`` starts first, and each try carries its weight to
Temporal as the activity's priority key.

Two kinds of failure are kept apart: a task's own failure is an Airflow try (its ``retries`` decide);
a lost worker (no heartbeat) retries the same try on another worker, a bounded number of times.
A task process that dies without an outcome is one failed Airflow try, never re-run on its own.

History stays bounded: when Temporal suggests it (or the run's history passes its budget), the loop
stops starting tries, lets the running ones finish, and hands a :class:`RunSnapshot` to the workflow,
which continues as new with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from temporal_airflow.models import (
    RUN_DAG_CALLBACK_ACTIVITY,
    ActivityTaskInput,
    DagCallbackInput,
    DagExecutionResult,
    RunProgress,
    RunSnapshot,
    TaskExecutionResult,
    TaskMark,
    TaskSummary,
    XComEntry,
    service_task_queue,
)
from temporal_airflow.workflows import summaries
from temporal_airflow.workflows.history_budget import history_is_full
from temporal_airflow.workflows.local_run import LocalDagRun
from temporal_airflow.workflows.states import InvalidTaskState
from temporal_airflow.workflows.tries import MAX_INLINE_INPUT_BYTES, DriverOptions, TryRunner, oversized_input
from temporal_airflow.workflows.values import ReadyTask, TaskKey
from temporal_airflow.workflows.waits import DeferralWaits

#: Timer between two batches of rows when a run creates or loads thousands of task instances.
_CATCH_UP_PAUSE = timedelta(milliseconds=1)
#: How long to wait before re-asking Airflow when nothing runs, nothing changed and no retry waits.
_IDLE_RECHECK = timedelta(seconds=5)
#: Patch id (``workflow.patched``): runs recorded before the replay budget replay without it.
_REPLAY_BUDGET = "replay-budget"
#: XCom values a run's result and progress carry inline, at most (the rest are listed without value).
RESULT_XCOM_BYTES = 1024 * 1024

#: A DAG callback may run this long; a lost worker retries it, a callback that raises does not.
_CALLBACK_TIMEOUT = timedelta(minutes=10)
_CALLBACK_RETRY = RetryPolicy(maximum_attempts=3)

TurnHook = Callable[[], None]
RecheckHook = Callable[[], Awaitable[None]]


def _wake_reason(wake_at: datetime | None, retry_at: datetime | None, timeout_at: datetime | None) -> str:
    if wake_at == retry_at:
        return "retry delay"
    return "dagrun_timeout" if wake_at == timeout_at else "next poke"


class ContinueAsNew(Exception):
    """The run's history is due for a new execution; ``snapshot`` is everything it must carry."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        super().__init__("continue as new")
        self.snapshot = snapshot


class DagRunDriver:
    """Runs a :class:`LocalDagRun` to its final state (or to the point where it continues as new)."""

    def __init__(
        self,
        local: LocalDagRun,
        options: DriverOptions,
        after_turn: TurnHook | None = None,
        generation: int = 0,
        marks: list[TaskMark] | None = None,
        before_recheck: RecheckHook | None = None,
    ) -> None:
        """``marks``: the workflow's list of user marks (its ``mark_task`` signal appends to it, also
        before the driver exists); each is applied at the next turn. ``before_recheck``: what the run may be
        waiting for outside itself (the previous run, for ``depends_on_past``), refreshed before each idle
        recheck."""
        self.local = local
        self.options = options
        self.after_turn = after_turn
        self.before_recheck = before_recheck
        self.generation = generation
        self.xcoms: dict[TaskKey, list[XComEntry]] = {}
        self.errors: dict[TaskKey, str] = {}
        self._running: dict[TaskKey, asyncio.Task[None]] = {}
        self._finished: list[tuple[TaskKey, TaskExecutionResult | None, str | None]] = []
        self._marks = marks if marks is not None else []
        #: Running tries whose task instance a user marked or cleared: their outcome, whatever it is, is
        #: ignored (a clear applies once the try has stopped, so it never runs twice at once).
        self._overruled: dict[TaskKey, TaskMark] = {}
        #: Task instances this execution's turns have evaluated (see :meth:`_replay_is_long`).
        self._replay_weight = 0
        self._tries = TryRunner(local, options)
        self._waits = DeferralWaits(service_task_queue(options.activity_task_queue), options.heartbeat_timeout)

    def carry(self, tasks: list[TaskSummary]) -> None:
        """Take over XComs and errors an earlier execution recorded."""
        for summary in tasks:
            key = TaskKey(summary.task_id, summary.map_index)
            if summary.xcoms:
                self.xcoms[key] = summary.xcoms
            if summary.error:
                self.errors[key] = summary.error

    async def run(self) -> str:
        """Schedule until Airflow declares the run finished (or ``dagrun_timeout`` ends it), run the DAG's
        callback if Airflow asked for one, and return the run's state.

        Raises :class:`ContinueAsNew` when the history is full and nothing runs any more.
        """
        state = await self._schedule()
        await self._run_dag_callback()
        return state

    async def _schedule(self) -> str:
        for key, deferral in self.local.deferrals().items():
            self._waits.watch(key, deferral, self._trigger_task)
        try:
            while True:
                if self.local.catching_up:
                    # Thousands of rows to create or load: one batch per activation, a short timer between.
                    self.local.catch_up()
                    await workflow.sleep(_CATCH_UP_PAUSE, summary="loading task instances")
                    continue
                self._apply_marks()
                if self.local.timed_out(workflow.now()):
                    await self._time_out()
                    return self.local.state
                draining = history_is_full() or self._replay_is_long()
                if draining and not self._running:
                    self._waits.cancel()  # the snapshot carries what they wait for
                    raise ContinueAsNew(self.snapshot())
                capacity = 0 if draining else self.local.max_active_tasks - len(self._running)
                turn = self.local.ready_tasks(capacity)
                self._replay_weight += self.local.size
                for task in turn.ready:
                    self._start(task)
                if self.after_turn is not None:
                    self.after_turn()
                if self.local.finished:
                    return self.local.state
                if not turn.progressed:
                    await self._wait_for_progress()
                self._apply_finished()
                self._resume_woken()
        except asyncio.CancelledError:
            await self._cancel_running()
            raise

    def _replay_is_long(self) -> bool:
        """This execution's turns have evaluated ``replay_budget`` task instances: replaying it (after an
        eviction) would take long, so the run continues as new. Executions recorded before the budget
        existed replay without it."""
        return self._replay_weight >= self.options.replay_budget and workflow.patched(_REPLAY_BUDGET)

    def snapshot(self) -> RunSnapshot:
        """The run so far, for the next execution (nothing may be running)."""
        return RunSnapshot(
            run=self.local.run_context(),
            fileloc=self.options.dag_path,
            serialized_dag=self.local.serialized_dag,
            tasks_json=summaries.dump(self.local.summaries(self.xcoms, self.errors)),
            generation=self.generation + 1,
        )

    def progress(self) -> RunProgress:
        """Per-task states as they are now (for the ``progress`` query)."""
        run = self.local.dag_run
        return RunProgress(
            dag_id=run.dag_id,
            run_id=run.run_id,
            state=self.local.state,
            tasks=self.local.summaries(self._reported_xcoms(), self.errors),
        )

    def result(self, state: str) -> DagExecutionResult:
        run = self.local.dag_run
        return DagExecutionResult(
            dag_id=run.dag_id,
            run_id=run.run_id,
            state=state,
            tasks=self.local.summaries(self._reported_xcoms(), self.errors),
            start_date=run.start_date,
            end_date=run.end_date,
            asset_updates=[] if self.options.deep_integration else self.local.asset_updates(),
        )

    def _reported_xcoms(self) -> dict[TaskKey, list[XComEntry]]:
        """XComs for a result or progress report: values past the size budget are left out (their
        reference, when stored, is kept), so a report always fits in one payload."""
        budget = RESULT_XCOM_BYTES
        reported: dict[TaskKey, list[XComEntry]] = {}
        for key, entries in sorted(self.xcoms.items()):
            kept = []
            for entry in entries:
                budget -= len(entry.value_json)
                kept.append(entry if budget >= 0 else dataclasses.replace(entry, value_json=""))
            reported[key] = kept
        return reported

    async def _wait_for_progress(self) -> None:
        retry_at, poke_at = self.local.next_retry_at(), self.local.next_poke_at()
        timeout_at = self.local.timeout_at
        wake_at = min((t for t in (retry_at, poke_at, timeout_at) if t is not None), default=None)
        if not (self._running or wake_at or self._finished or self._waits.active or self._marks):
            # Nothing runs, nothing waits, nothing changed, yet Airflow keeps the run open: look again
            # shortly rather than spin (Airflow itself fails runs that are truly deadlocked).
            if self.before_recheck is not None:
                await self.before_recheck()
            else:
                workflow.logger.warning("Run %s: nothing to run or wait for; rechecking", self.local.dag_run.run_id)
            await workflow.sleep(_IDLE_RECHECK, summary="idle recheck")
            return
        timeout = None
        if wake_at is not None:
            timeout = max((wake_at - workflow.now()).total_seconds(), 0.0) + 0.001
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: bool(self._finished or self._waits.woken or self._marks),
                timeout=timeout,
                timeout_summary=_wake_reason(wake_at, retry_at, timeout_at),
            )

    def _apply_marks(self) -> None:
        """Give marked task instances their state; stop a try or trigger of theirs still running."""
        marks = list(self._marks)
        self._marks.clear()
        for mark in marks:
            key = TaskKey(mark.task_id, mark.map_index)
            if (running := self._running.get(key)) is not None:
                self._overruled[key] = mark
                running.cancel()
                if mark.state is None:
                    continue  # cleared: once its try has stopped
            try:
                known = self.local.set_state(key, mark.state, workflow.now())
            except InvalidTaskState as err:
                workflow.logger.warning("Mark of %s ignored: %s", key.label, err)
                continue
            if not known:
                workflow.logger.warning("Mark of %s ignored: the run has no such task instance", key.label)
                continue
            workflow.logger.info("Task %s %s by a user", key.label, f"marked {mark.state}" if mark.state else "cleared")
            self._waits.stop(key)
            self.errors.pop(key, None)

    def _resume_woken(self) -> None:
        """Deferred tasks whose wait ended: resume them (or record how their trigger ended them)."""
        for key, outcome in self._waits.take():
            ready = self.local.resume_deferred(key, outcome, workflow.now())
            if ready is not None:
                self._start(ready)

    def _trigger_task(self, key: TaskKey) -> ActivityTaskInput:
        """The try a deferred task's trigger belongs to (its connections and variables are the task's)."""
        return self._task_input(self.local.current_try(key), upstream_xcoms=[])

    def _task_input(self, ready: ReadyTask, upstream_xcoms: list[XComEntry]) -> ActivityTaskInput:
        key = ready.key
        next_method, next_kwargs = self.local.resume_point(key)
        return ActivityTaskInput(
            dag_path=self.options.dag_path,
            task_id=key.task_id,
            map_index=key.map_index,
            try_number=ready.try_number,
            max_tries=ready.max_tries,
            run=self.local.run_context(),
            upstream_xcoms=upstream_xcoms,
            variables=self.options.variables,
            deep_integration=self.options.deep_integration,
            reschedule=self.local.reschedule(key),
            next_method=next_method,
            next_kwargs=next_kwargs,
        )

    def _start(self, ready: ReadyTask) -> None:
        key = ready.key
        self.local.mark_running(key, workflow.now())
        task_input = self._task_input(ready, self._upstream_xcoms(key.task_id))
        inline = sum(len(x.value_json) for x in task_input.upstream_xcoms)
        if inline > MAX_INLINE_INPUT_BYTES:
            self._running[key] = asyncio.create_task(self._refuse(key, task_input, inline))
            return
        self._running[key] = asyncio.create_task(self._execute(key, task_input))

    async def _refuse(self, key: TaskKey, task_input: ActivityTaskInput, inline: int) -> None:
        """Fail a try whose XCom input cannot travel inline (no payload store): retrying cannot help."""
        self._finished.append((key, oversized_input(key, task_input, inline, workflow.now()), None))

    def _upstream_xcoms(self, task_id: str) -> list[XComEntry]:
        if self.options.deep_integration:
            return []  # tasks pull XComs from Airflow's DB
        ancestors = self.local.ancestor_ids(task_id)
        return [entry for key in sorted(k for k in self.xcoms if k.task_id in ancestors) for entry in self.xcoms[key]]

    async def _execute(self, key: TaskKey, task_input: ActivityTaskInput) -> None:
        try:
            result, failure = await self._tries.run(key, task_input)
        except asyncio.CancelledError:
            if key not in self._overruled:
                raise
            result, failure = None, "marked by a user"
        self._finished.append((key, result, failure))

    def _apply_finished(self) -> None:
        finished, self._finished = self._finished, []
        for key, result, failure in finished:
            self._running.pop(key, None)
            if (overruled := self._overruled.pop(key, None)) is not None:
                if overruled.state is None:
                    self.local.set_state(key, None, workflow.now())  # cleared: it runs again
                continue  # the user's mark stands
            if result is not None:
                try:
                    self.local.record_result(result)
                except InvalidTaskState as err:
                    failure = f"task reported an invalid outcome: {err}"
                else:
                    if result.xcoms:
                        self.xcoms[key] = result.xcoms
                    if result.error:
                        self.errors[key] = result.error
                    else:
                        self.errors.pop(key, None)
                    if result.deferral is not None and result.state == "deferred":
                        self._waits.watch(key, result.deferral, self._trigger_task)
                    continue
            state = self.local.record_lost_try(key, workflow.now())
            self.errors[key] = f"task try produced no outcome: {failure}"
            workflow.logger.warning("Task %s: try ended without an outcome (%s), now %s", key.label, failure, state)

    async def _time_out(self) -> None:
        """``dagrun_timeout`` passed: stop every running try and waiting trigger, then end the run as
        Airflow's scheduler does (failed, unfinished task instances skipped)."""
        workflow.logger.info("Run %s: dagrun_timeout passed, failing it", self.local.dag_run.run_id)
        await self._stop_running()
        self._finished.clear()
        self.local.time_out(workflow.now())
        if self.after_turn is not None:
            self.after_turn()

    async def _run_dag_callback(self) -> None:
        """The DAG's ``on_success_callback`` / ``on_failure_callback``, once, on an activity worker; a
        callback that fails is logged and leaves the run's state as it is (as under Airflow)."""
        request = self.local.callback_request
        if request is None:
            return
        try:
            await workflow.execute_activity(
                RUN_DAG_CALLBACK_ACTIVITY,
                DagCallbackInput(self.options.dag_path, request, self.options.variables),
                task_queue=service_task_queue(self.options.activity_task_queue),
                start_to_close_timeout=_CALLBACK_TIMEOUT,
                retry_policy=_CALLBACK_RETRY,
                summary="DAG callback",
            )
        except ActivityError as err:
            workflow.logger.warning("Run %s: DAG callback failed: %s", self.local.dag_run.run_id, err.cause or err)

    async def _stop_running(self) -> None:
        self._waits.cancel()
        for task in self._running.values():
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        self._running.clear()

    async def _cancel_running(self) -> None:
        await self._stop_running()
        self.local.fail_unfinished(workflow.now())
