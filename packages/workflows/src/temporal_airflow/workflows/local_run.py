"""A real Airflow DagRun, with its TaskInstances, in a private in-memory SQLite database.

The workflow owns one :class:`LocalDagRun` per run. All scheduling decisions (trigger rules,
branching skips, setup/teardown, retries' waiting periods, mapped-task expansion, the run's final
state) are made by Airflow's own ``DagRun.update_state`` on these rows; this module creates the run and
plays its turns: it feeds Airflow the outcome of each task try and reads back what became runnable.

A turn must stay cheap however large the run is: Temporal fails a workflow task that does not yield
within 2 s, and every replay repeats every turn. The jobs that make that so have a module each: the
run's database (:mod:`run_db`), its rows kept in memory and loaded a batch per activation
(:mod:`rows`), the frontier a turn shows Airflow (:mod:`frontier`), which ready tries start
(:mod:`admission`), and recording outcomes (:mod:`outcomes`). Airflow's internals are reached through
one door, :mod:`airflow_compat`, installed before a run is made.

Everything here runs inside workflow code: it must be deterministic. Airflow's clock is routed to
``workflow.now()`` by :mod:`temporal_airflow.workflows.clock`, and every list handed back to the
workflow is sorted so that the order of commands never depends on SQLite's row order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from airflow.callbacks.callback_requests import DagCallbackRequest
from airflow.models.dagrun import DagRun
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunType
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from temporal_airflow.models import (
    INVALID_CONF_ERROR,
    AssetUpdate,
    Deferral,
    PreviousRun,
    Reschedule,
    RunContext,
    TaskExecutionResult,
    TaskSummary,
    TriggerOutcome,
    XComEntry,
)
from temporal_airflow.workflows import airflow_compat, mapped_outputs, previous_run, run_db
from temporal_airflow.workflows.admission import PriorityKeys, admit
from temporal_airflow.workflows.frontier import Frontier
from temporal_airflow.workflows.outcomes import RunOutcomes
from temporal_airflow.workflows.rows import RunRows, key_of
from temporal_airflow.workflows.states import state_text
from temporal_airflow.workflows.values import ReadyTask, TaskKey, Turn
from temporal_airflow.workflows.wait_records import WaitRecords

#: The columns ``DagRun.schedule_tis`` sets with its bulk UPDATE.
_SCHEDULED_COLUMNS = ["state", "try_number", "scheduled_dttm", "start_date", "end_date", "duration"]


class LocalDagRun:
    """Owns the in-workflow database and the DagRun in it."""

    def __init__(
        self,
        serialized_dag: dict[str, Any],
        *,
        run_id: str,
        run_type: str,
        logical_date: datetime | None,
        run_after: datetime,
        conf: dict[str, Any],
        start_date: datetime | None = None,
    ) -> None:
        airflow_compat.install()
        self._engine, self._session = run_db.open_session()
        self.serialized_dag = serialized_dag
        self.dag = DagSerialization.from_dict(serialized_dag)
        # Deadline alerts live in Airflow's DB, not this one: deep mode's scheduler fires their misses and
        # the final sync prunes them as Airflow would (standalone mode has no scheduler to fire them).
        self.dag.deadline = None
        session = self._session
        with airflow_compat.deferred_rows() as deferred:
            self.dag_run: DagRun = run_db.create_dag_run(
                session,
                self.dag,
                run_id=run_id,
                run_type=run_type,
                logical_date=logical_date,
                run_after=run_after,
                conf=conf,
                start_date=start_date,
            )
        session.commit()
        self._waits = WaitRecords(session)
        outputs = mapped_outputs.for_this_airflow()
        self._rows = RunRows(session, self.dag, self.dag_run, self._waits, outputs, deferred[0] if deferred else None)
        self._priority_keys = PriorityKeys(self._rows)
        #: The ``DagCallbackRequest`` (as JSON) Airflow made when it settled the run's state, if any.
        self.callback_request: str | None = None
        # Small runs are ready at once; big ones write and load their rows a batch per activation.
        self._rows.catch_up()
        self._frontier = Frontier(self._rows, self.dag, self.dag_run, session)
        self._outcomes = RunOutcomes(
            session, self.dag_run, self._rows, self._waits, outputs, self._frontier.known_ready
        )

    @property
    def catching_up(self) -> bool:
        """Rows still to create or load: call :meth:`catch_up` (one activation each) before scheduling."""
        return self._rows.catching_up

    def catch_up(self) -> None:
        self._rows.catch_up()

    def restore(self, tasks: Iterable[TaskSummary]) -> None:
        """Take over task states from an earlier execution or Airflow's DB (see :meth:`RunRows.restore`)."""
        self._rows.restore(tasks)

    # -- scheduling ---------------------------------------------------------------------------------

    def ready_tasks(self, capacity: int) -> Turn:
        """Ask Airflow what may run now and schedule at most ``capacity`` of those tasks.

        Scheduling goes through Airflow's ``DagRun.schedule_tis``, so tasks that need no execution
        (plain ``EmptyOperator``) succeed on the spot, as under Airflow's scheduler. ``progressed`` says
        whether any state changed without a task starting (skips, upstream failures, empty tasks): the
        caller then asks again at once.
        """
        session, frontier = self._session, self._frontier
        rows = len(self._rows.ordered)
        with frontier.turn(capacity):
            schedulable, callback = self.dag_run.update_state(session=session, execute_callbacks=False)
        self._keep_callback(callback)
        schedulable = sorted(schedulable, key=key_of)
        no_run = [ti for ti in schedulable if not ti.is_schedulable]
        runnable = [ti for ti in schedulable if ti.is_schedulable]
        to_run = admit(runnable, max(capacity, 0), self._rows.ordered)
        admitted = {key_of(ti) for ti in to_run}
        frontier.known_ready.update(key_of(ti) for ti in runnable if key_of(ti) not in admitted)
        if no_run or to_run:
            self.dag_run.schedule_tis(no_run + to_run, session=session)
        session.commit()
        for ti in no_run + to_run:
            # schedule_tis writes with a bulk UPDATE the ORM objects do not see; only its columns are read
            # back (a full refresh also unpickles columns such as executor_config, a millisecond each)
            session.refresh(ti, attribute_names=_SCHEDULED_COLUMNS)
        if frontier.expanded or self._rows.row_count() != rows:
            self._rows.refresh()  # an expansion added rows or renumbered the unmapped one
        ready = []
        for ti in to_run:
            frontier.known_ready.discard(key_of(ti))
            if ti.state == TaskInstanceState.SCHEDULED:
                ti.state = TaskInstanceState.QUEUED
                ready.append(ReadyTask(key_of(ti), ti.try_number, ti.max_tries))
        session.commit()
        return Turn(ready=ready, progressed=bool(no_run) or frontier.changed)

    def priority_key(self, key: TaskKey) -> int | None:
        """Temporal's priority key (1 = first, 5 = last) for the task's ``priority_weight``."""
        return self._priority_keys(key)

    # -- outcomes (see :mod:`outcomes`) ----------------------------------------------------------------

    def mark_running(self, key: TaskKey, when: datetime) -> None:
        self._outcomes.mark_running(key, when)

    def record_result(self, result: TaskExecutionResult) -> None:
        self._outcomes.record_result(result)

    def record_lost_try(self, key: TaskKey, when: datetime) -> str:
        return self._outcomes.record_lost_try(key, when)

    def set_state(self, key: TaskKey, state: str | None, when: datetime) -> bool:
        return self._outcomes.set_state(key, state, when)

    def resume_deferred(self, key: TaskKey, outcome: TriggerOutcome, when: datetime) -> ReadyTask | None:
        return self._outcomes.resume_deferred(key, outcome, when)

    def fail_unfinished(self, when: datetime) -> None:
        self._outcomes.fail_unfinished(when)

    # -- reading ------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return str(self.dag_run.state)

    @property
    def finished(self) -> bool:
        return self.dag_run.state in (DagRunState.SUCCESS, DagRunState.FAILED)

    @property
    def size(self) -> int:
        """Task instances of the run loaded so far."""
        return len(self._rows.ordered)

    @property
    def max_active_tasks(self) -> int:
        return int(self.dag.max_active_tasks)

    def run_context(self) -> RunContext:
        return RunContext.of(self.dag_run)

    def ancestor_ids(self, task_id: str) -> frozenset[str]:
        """Every task upstream of ``task_id`` (their XComs are pullable by this task)."""
        return self._frontier.ancestor_ids(task_id)

    def task_attribute(self, task_id: str, name: str) -> Any:
        return getattr(self.dag.get_task(task_id), name, None)

    def states(self) -> dict[TaskKey, tuple[str | None, int]]:
        """State and try number of every task instance (cheap: no query)."""
        return {key: (state_text(ti), ti.try_number) for key, ti in self._rows.by_key.items()}

    def summary(self, key: TaskKey, xcoms: list[XComEntry] | None = None, error: str | None = None) -> TaskSummary:
        ti = self._rows.ti(key)
        return TaskSummary(
            task_id=ti.task_id,
            map_index=ti.map_index,
            state=state_text(ti),
            try_number=ti.try_number,
            start_date=ti.start_date,
            end_date=ti.end_date,
            xcoms=xcoms or [],
            error=error,
            retry_delay_seconds=airflow_compat.retry_delay(ti),
            reschedule=self._waits.reschedule(ti) if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE else None,
            deferral=self._waits.deferral(ti),
        )

    def asset_updates(self) -> list[AssetUpdate]:
        """The assets (declared ``outlets``, aliases aside) of every task instance that succeeded."""
        return [
            AssetUpdate(uri=outlet.uri, name=outlet.name, task_id=ti.task_id, map_index=ti.map_index)
            for ti in self._rows.ordered
            if ti.state == TaskInstanceState.SUCCESS
            for outlet in getattr(ti.task, "outlets", None) or []
            if getattr(outlet, "uri", None)
        ]

    def summaries(self, xcoms: dict[TaskKey, list[XComEntry]], errors: dict[TaskKey, str]) -> list[TaskSummary]:
        return [self.summary(key, xcoms.get(key), errors.get(key)) for key in sorted(self._rows.by_key)]

    def reschedule(self, key: TaskKey) -> Reschedule | None:
        """A reschedule-mode sensor's earlier pokes of its current try."""
        return self._waits.reschedule(self._rows.ti(key))

    def next_poke_at(self) -> datetime | None:
        """Earliest moment a sensor waiting in ``up_for_reschedule`` may poke again (its own date)."""
        return self._waits.next_poke_at(self._rows.ordered)

    def resume_point(self, key: TaskKey) -> tuple[str | None, dict[str, Any] | None]:
        """The method (and its kwargs, with the trigger's event) a resumed deferred try runs."""
        ti = self._rows.ti(key)
        return ti.next_method, ti.next_kwargs

    def current_try(self, key: TaskKey) -> ReadyTask:
        """The task instance's try as it stands (a deferred task's trigger belongs to it)."""
        ti = self._rows.ti(key)
        return ReadyTask(key, ti.try_number, ti.max_tries)

    def deferrals(self) -> dict[TaskKey, Deferral]:
        """Every deferred task instance and what it waits for."""
        found = {key: self._waits.deferral(ti) for key, ti in sorted(self._rows.by_key.items())}
        return {key: deferral for key, deferral in found.items() if deferral is not None}

    def next_retry_at(self) -> datetime | None:
        """Earliest moment a task waiting in ``up_for_retry`` may run again (Airflow's own delay)."""
        times = [ti.next_retry_datetime() for ti in self._rows.ordered if ti.state == TaskInstanceState.UP_FOR_RETRY]
        return min(times) if times else None

    def _keep_callback(self, request: DagCallbackRequest | None) -> None:
        if request is not None and self.callback_request is None:
            self.callback_request = request.model_dump_json()

    @property
    def timeout_at(self) -> datetime | None:
        """When the DAG's ``dagrun_timeout`` ends this run (counted from its start), if it has one."""
        timeout, start = self.dag.dagrun_timeout, self.dag_run.start_date
        return None if timeout is None or start is None or self.finished else start + timeout

    def timed_out(self, now: datetime) -> bool:
        deadline = self.timeout_at
        return deadline is not None and now >= deadline

    def time_out(self, when: datetime) -> None:
        """End the run as Airflow's scheduler does when ``dagrun_timeout`` passes (see
        :meth:`RunOutcomes.time_out`); the failure callback is asked for with reason ``timed_out``."""
        last = self._outcomes.time_out(when)
        if self.dag.has_on_failure_callback:
            self._keep_callback(
                airflow_compat.produce_dag_callback(
                    self.dag_run, self._session, dag=self.dag, success=False, relevant_ti=last, reason="timed_out"
                )
            )

    # -- the run before this one (depends_on_past) ---------------------------------------------------

    def past_dependent_task_ids(self) -> list[str]:
        return previous_run.past_dependent_task_ids(self.dag)

    def set_previous_run(self, previous: PreviousRun) -> None:
        previous_run.mirror(self._session, self.dag, self.dag_run, previous)

    def dispose(self) -> None:
        self._session.close()
        self._engine.dispose()


def warm_up() -> None:
    """Run Airflow's scheduling code once on a one-task DAG, outside any workflow task.

    Its first use in a process configures SQLAlchemy's mappers and imports what Airflow imports lazily:
    seconds on a busy machine, which inside a run's first workflow task would trip Temporal's 2 s
    deadlock detector. The workflows plugin calls this when a worker (or replayer) starts.
    """
    from airflow.sdk import DAG, BaseOperator

    class WarmUp(BaseOperator):
        def execute(self, context: Any) -> None:  # never runs: only scheduled
            return None

    start = datetime(2024, 1, 1, tzinfo=UTC)
    with DAG("temporal_airflow_warm_up", schedule=None, start_date=start) as dag:
        WarmUp(task_id="warm_up")
    local = LocalDagRun(
        DagSerialization.to_dict(dag),
        run_id="warm_up",
        run_type=DagRunType.MANUAL,
        logical_date=start,
        run_after=start,
        conf={},
    )
    local.ready_tasks(1)
    local.dispose()


def create_local_run(
    serialized_dag: dict[str, Any],
    *,
    run_id: str | None,
    logical_date: datetime | None,
    conf: dict[str, Any],
    run_type: str = DagRunType.MANUAL,
    run_after: datetime | None = None,
    start_date: datetime | None = None,
) -> LocalDagRun:
    """Create the run; a ``conf`` the DAG's params reject fails the workflow without retrying."""
    now = workflow.now()
    run_after = run_after or now
    if logical_date is None and run_type == DagRunType.MANUAL:
        logical_date = now
    run_id = run_id or DagRun.generate_run_id(
        run_type=DagRunType(run_type), logical_date=logical_date, run_after=run_after
    )
    try:
        return LocalDagRun(
            serialized_dag,
            run_id=run_id,
            run_type=run_type,
            logical_date=logical_date,
            run_after=run_after,
            conf=conf,
            start_date=start_date,
        )
    except (ParamValidationError, ValueError, TypeError) as err:
        raise ApplicationError(
            f"DAG run conf rejected for run {run_id!r}: {err}", type=INVALID_CONF_ERROR, non_retryable=True
        ) from err


def resume_local_run(context: RunContext, serialized_dag: dict[str, Any], tasks: Iterable[TaskSummary]) -> LocalDagRun:
    """The run as an earlier execution left it (see :class:`temporal_airflow.models.RunSnapshot`)."""
    local = LocalDagRun(
        serialized_dag,
        run_id=context.run_id,
        run_type=context.run_type,
        logical_date=context.logical_date,
        run_after=context.run_after,
        conf=context.conf,
        start_date=context.start_date,
    )
    local.restore(tasks)
    return local
