"""A real Airflow DagRun, with its TaskInstances, in a private in-memory SQLite database.

The workflow owns one :class:`LocalDagRun` per run. All scheduling decisions (trigger rules,
branching skips, setup/teardown, retries' waiting periods, mapped-task expansion, the run's final
state) are made by Airflow's own ``DagRun.update_state`` on these rows; this module only feeds it the
outcome of each task try and reads back what became runnable.

A turn must stay cheap however large the run is: Temporal fails a workflow task that does not yield
within 2 s, and every replay repeats every turn. So the task instances stay in memory as the very ORM
objects Airflow works on and are not re-read from SQLite each turn (only after an expansion adds
rows); ``update_state`` is handed that list instead of a fresh query, and its dependency check only
sees the task instances that could be ready at all: those with a finished upstream (or none), plus at
most a turn's capacity of those it already found ready. A turn costs about the run's frontier, not
the whole DAG.

Everything here runs inside workflow code: it must be deterministic. Airflow's clock is routed to
``workflow.now()`` by :mod:`temporal_airflow.workflows.clock`, and every list handed back to the
workflow is sorted so that the order of commands never depends on SQLite's row order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pendulum
from airflow.callbacks.callback_requests import DagCallbackRequest
from airflow.exceptions import NotMapped, ParamValidationError
from airflow.models import import_all_models
from airflow.models.base import Base
from airflow.models.dag import DagModel
from airflow.models.dag_version import DagVersion
from airflow.models.dagbundle import DagBundleModel
from airflow.models.dagrun import DagRun
from airflow.models.expandinput import NotFullyPopulated
from airflow.models.taskinstance import TaskInstance
from airflow.models.taskmap import TaskMap
from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
from airflow.serialization.definitions.mappedoperator import get_mapped_ti_count, is_mapped
from airflow.serialization.serialized_objects import DagSerialization
from airflow.task.trigger_rule import TriggerRule
from airflow.ti_deps.dep_context import DepContext
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from sqlalchemy import Engine, create_engine, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
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
from temporal_airflow.workflows import bulk_rows
from temporal_airflow.workflows.wait_records import WaitRecords

_BUNDLE = "temporal-airflow"
_FINISHED = frozenset(
    {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
)
#: States a try in flight can be in; a run carried into a new execution re-runs none of them.
_IN_FLIGHT = frozenset({TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED, TaskInstanceState.RUNNING})
#: States of a try that started and has not ended; a cancelled run fails them.
_STARTED = frozenset(
    {
        TaskInstanceState.QUEUED,
        TaskInstanceState.RUNNING,
        TaskInstanceState.DEFERRED,
        TaskInstanceState.UP_FOR_RESCHEDULE,
    }
)

#: States a user may give a task instance from Airflow's UI or REST API.
_MARKABLE = frozenset({TaskInstanceState.SUCCESS, TaskInstanceState.FAILED, TaskInstanceState.SKIPPED})

#: The columns ``DagRun.schedule_tis`` sets with its bulk UPDATE.
_SCHEDULED_COLUMNS = ["state", "try_number", "scheduled_dttm", "start_date", "end_date", "duration"]

#: States of a try that counts against its task's ``max_active_tis_per_dag(run)``, as Airflow counts them.
_ACTIVE = frozenset({TaskInstanceState.QUEUED, TaskInstanceState.RUNNING, TaskInstanceState.DEFERRED})

import_all_models()


#: Airflow's tables in an in-memory DB, made once per process: each run's DB starts as a copy of it
#: (milliseconds, where creating ~60 tables takes a tenth of a second, and more the first time).
_SCHEMA = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
Base.metadata.create_all(_SCHEMA)
_SCHEMA_LOCK = threading.Lock()


def _copy_schema(engine: Engine) -> None:
    source: Any = _SCHEMA.raw_connection().driver_connection
    with _SCHEMA_LOCK:
        source.backup(engine.raw_connection().driver_connection)


#: While a workflow's turn runs: how many freshly expanded task instances Airflow may check at once.
_EXPANSION_SLICE: ContextVar[int | None] = ContextVar("temporal_airflow_expansion_slice", default=None)
_expand_mapped_task = TaskMap.expand_mapped_task.__func__  # type: ignore[attr-defined]


def _expand_in_slices(cls: type[TaskMap], task: Any, run_id: str, *, session: Session) -> Any:
    """``TaskMap.expand_mapped_task``, handing back only the first slice of the new task instances.

    Airflow checks the dependencies of every instance an expansion returns in the same pass: seconds
    for thousands of indexes. Inside a workflow turn the rest stay in the DB (state ``None``, already
    expanded) and are checked a turn's worth at a time by :class:`LocalDagRun`. Elsewhere, unchanged.
    """
    tis, total = _expand_mapped_task(cls, task, run_id, session=session)
    limit = _EXPANSION_SLICE.get()
    return (tis if limit is None else tis[:limit]), total


TaskMap.expand_mapped_task = classmethod(_expand_in_slices)  # type: ignore[assignment,method-assign]

#: While a workflow creates its DagRun: where Airflow's task-instance rows go instead of the DB.
_DEFERRED_ROWS: ContextVar[list[tuple[Iterator[Any], bool]] | None] = ContextVar(
    "temporal_airflow_deferred_rows", default=None
)
_create_task_instances = DagRun._create_task_instances


def _create_task_instances_later(self: DagRun, dag_id: str, tasks: Any, *args: Any, **kwargs: Any) -> None:
    """``DagRun._create_task_instances``, handing the (lazy) rows to :class:`LocalDagRun` when it asks.

    ``verify_integrity`` builds one ``TaskInstance`` per task to make each row (~1 ms each): for a big DAG
    that is seconds in the workflow's first activation. Inside a workflow the rows are written a batch per
    activation instead, from the same generator; elsewhere, unchanged.
    """
    sink = _DEFERRED_ROWS.get()
    if sink is None:
        return _create_task_instances(self, dag_id, tasks, *args, **kwargs)
    sink.append((iter(tasks), bool(kwargs.get("hook_is_noop", args[1] if len(args) > 1 else True))))
    return None


DagRun._create_task_instances = _create_task_instances_later  # type: ignore[method-assign]


class InvalidTaskState(ValueError):
    """A task outcome named a state Airflow does not know."""


@dataclass(frozen=True, order=True)
class TaskKey:
    """Identifies a task instance within the run."""

    task_id: str
    map_index: int = -1

    def activity_id(self, try_number: int) -> str:
        return f"{self.label}#try{try_number}"

    @property
    def label(self) -> str:
        """``extract`` or ``transform[3]``: how the task instance reads in logs and the Temporal UI."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


@dataclass(frozen=True)
class ReadyTask:
    """A task instance Airflow says may start now."""

    key: TaskKey
    try_number: int
    max_tries: int


@dataclass(frozen=True)
class Turn:
    """What one scheduling turn decided: tasks to start, and whether any state changed without one."""

    ready: list[ReadyTask]
    progressed: bool


def _key(ti: TaskInstance) -> TaskKey:
    return TaskKey(ti.task_id, ti.map_index)


def _priority_order(ti: TaskInstance) -> tuple[int, int, str]:
    """Airflow's scheduler order: ``priority_weight`` descending, then map index (then task id)."""
    return -(ti.priority_weight or 0), ti.map_index, ti.task_id


def _active_limit(task: Any) -> int | None:
    """The tighter of a task's ``max_active_tis_per_dagrun`` and ``max_active_tis_per_dag``, if any."""
    limits = [
        limit
        for limit in (getattr(task, "max_active_tis_per_dagrun", None), getattr(task, "max_active_tis_per_dag", None))
        if limit is not None
    ]
    return min(limits, default=None)


def _state_text(ti: TaskInstance) -> str | None:
    return None if ti.state is None else str(ti.state)


def task_state(value: str) -> TaskInstanceState:
    """Airflow's state for ``value``; an unknown state is an error, never a silent guess."""
    try:
        return TaskInstanceState(value)
    except ValueError:
        raise InvalidTaskState(f"unknown task state {value!r}") from None


class _RunSession(Session):
    """The in-workflow DB's session: adding a brand-new task instance needs no lookup.

    Airflow's mapped-task expansion ``merge``s each new ``TaskInstance`` (a SELECT by its fresh
    UUID per index: seconds for thousands of indexes); for a transient one that is the same as ``add``.
    """

    def merge(self, instance: Any, *, load: bool = True, options: Any = None) -> Any:
        if load and isinstance(instance, TaskInstance) and inspect(instance).transient:
            self.add(instance)
            return instance
        return super().merge(instance, load=load, options=options)


@dataclass
class _Expansion:
    """A mapped task whose index rows are being created, a batch per activation."""

    template_id: Any
    total: int
    next_index: int = 1


@dataclass(frozen=True)
class _TurnView:
    """The task instances one turn shows Airflow, and (by ``id``) those whose dependencies it checks."""

    tis: list[TaskInstance]
    candidates: frozenset[int]


def _is_mapped(task: Any) -> bool:
    return task is not None and is_mapped(task)


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
        self._engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        _copy_schema(self._engine)
        self._session: Session = sessionmaker(bind=self._engine, class_=_RunSession, expire_on_commit=False)()
        self.serialized_dag = serialized_dag
        self.dag = DagSerialization.from_dict(serialized_dag)
        # Deadline alerts live in Airflow's DB, not this one: deep mode's scheduler fires their misses and
        # the final sync prunes them as Airflow would (standalone mode has no scheduler to fire them).
        self.dag.deadline = None
        session = self._session
        session.add(DagBundleModel(name=_BUNDLE))
        # The file's path names it in DAG callback requests.
        fileloc = getattr(self.dag, "relative_fileloc", None) or getattr(self.dag, "fileloc", None) or ""
        session.add(DagModel(dag_id=self.dag.dag_id, bundle_name=_BUNDLE, relative_fileloc=fileloc))
        session.flush()
        DagVersion.write_dag(dag_id=self.dag.dag_id, bundle_name=_BUNDLE, session=session)
        data_interval = None
        if logical_date is not None:
            data_interval = self.dag.timetable.infer_manual_data_interval(run_after=pendulum.instance(logical_date))
        deferred: list[tuple[Iterator[Any], bool]] = []
        token = _DEFERRED_ROWS.set(deferred)
        try:
            self.dag_run: DagRun = self._create_dagrun(
                run_id, run_type, logical_date, data_interval, run_after, conf, start_date
            )
        finally:
            _DEFERRED_ROWS.reset(token)
        session.commit()
        self._tis_by_key: dict[TaskKey, TaskInstance] = {}
        self._sorted: list[TaskInstance] = []
        self._weights: tuple[int, int] | None = None
        self._known_ready: set[TaskKey] = set()
        self._view: _TurnView | None = None
        self._ancestors: dict[str, frozenset[str]] = {}
        self._turn_capacity = 0
        self._changed = False
        self._expanded = False
        self._waits = WaitRecords(session)
        #: The ``DagCallbackRequest`` (as JSON) Airflow made when it settled the run's state, if any.
        self.callback_request: str | None = None
        #: Rows Airflow made for the new run, still to write; big expansions under way (task id -> rows
        #: still to create); rows still to load; carried states waiting for their rows.
        self._new_rows: tuple[Iterator[Any], bool] | None = deferred[0] if deferred else None
        self._expansions: dict[str, _Expansion] = {}
        self._to_load: list[Any] = []
        self._precreated: set[str] = set()
        self._pending: dict[TaskKey, TaskSummary] = {}
        # Small runs are ready at once; big ones write and load their rows a batch per activation.
        self.catch_up()
        self._install_seams()

    def _create_dagrun(
        self,
        run_id: str,
        run_type: str,
        logical_date: datetime | None,
        data_interval: Any,
        run_after: datetime,
        conf: dict[str, Any],
        start_date: datetime | None,
    ) -> DagRun:
        return self.dag.create_dagrun(
            run_id=run_id,
            logical_date=logical_date,
            data_interval=data_interval,
            run_after=run_after,
            conf=conf,
            run_type=DagRunType(run_type),
            triggered_by=DagRunTriggeredByType.TIMETABLE
            if run_type == DagRunType.SCHEDULED
            else DagRunTriggeredByType.REST_API,
            state=DagRunState.RUNNING,
            start_date=start_date or run_after,
            session=self._session,
        )

    # -- the in-memory view Airflow's scheduling code runs on ----------------------------------------

    @property
    def catching_up(self) -> bool:
        """Rows still to create or load: call :meth:`catch_up` (one activation each) before scheduling."""
        return bool(self._new_rows or self._expansions or self._to_load)

    def catch_up(self) -> None:
        """Create or load one activation's worth of rows (see :mod:`bulk_rows`)."""
        budget = bulk_rows.ROWS_PER_ACTIVATION
        if self._new_rows is not None:
            rows, plain = self._new_rows
            batch = list(islice(rows, budget // 2))
            if len(batch) < budget // 2:
                self._new_rows = None
            if batch:
                if plain:
                    self._session.bulk_insert_mappings(TaskInstance.__mapper__, batch)
                else:
                    self._session.bulk_save_objects(batch)
                self._session.flush()
                known = {ti.id for ti in self._sorted} | set(self._to_load)
                ids = bulk_rows.row_ids(self._session, self.dag_run.dag_id, self.dag_run.run_id)
                self._to_load.extend(sorted(ids - known))
            budget -= len(batch)
        for task_id, expansion in sorted(self._expansions.items()):
            indexes = range(expansion.next_index, min(expansion.next_index + budget, expansion.total))
            self._to_load.extend(bulk_rows.clone_indexes(self._session, expansion.template_id, indexes))
            expansion.next_index = indexes.stop
            budget -= len(indexes)
            if expansion.next_index >= expansion.total:
                del self._expansions[task_id]  # Airflow's own expansion now just renumbers the unmapped row
                self._precreated.add(task_id)
            if budget <= 0:
                break
        self._session.commit()
        if budget > 0 and self._to_load:
            batch, self._to_load = self._to_load[:budget], self._to_load[budget:]
            self._add(bulk_rows.load(self._session, batch))

    def _add(self, tis: Iterable[TaskInstance]) -> None:
        """Cache newly loaded rows, applying states carried from an earlier execution."""
        for ti in tis:
            ti.task = self.dag.get_task(ti.task_id)
            self._tis_by_key[_key(ti)] = ti
            if (summary := self._pending.pop(_key(ti), None)) is not None:
                self._apply(ti, summary)
        self._sorted = sorted(self._tis_by_key.values(), key=lambda ti: (ti.task_id, ti.map_index))
        self._weights = None
        self._session.commit()

    def _refresh(self) -> None:
        """After Airflow changed rows: re-key those changed in place, load (or queue) rows it added."""
        if self._row_count() == len(self._sorted):
            self._tis_by_key = {_key(ti): ti for ti in self._sorted}  # renumbered in place, nothing new
            self._add([])
            return
        ids = bulk_rows.row_ids(self._session, self.dag_run.dag_id, self.dag_run.run_id)
        cached = {ti.id: ti for ti in self._sorted}
        self._tis_by_key = {_key(ti): ti for ti_id, ti in cached.items() if ti_id in ids}
        missing = sorted(ids - cached.keys() - set(self._to_load))
        if len(missing) <= bulk_rows.ROWS_PER_ACTIVATION:
            self._add(bulk_rows.load(self._session, missing))
        else:
            self._to_load.extend(missing)
            self._add([])

    def _big_expansion(self, ti: TaskInstance, finished: list[TaskInstance], session: Session) -> bool:
        """Start expanding ``ti``'s mapped task row by row when it is ready and has many indexes."""
        if ti.map_index >= 0 or ti.state is not None or ti.task_id in self._precreated or not _is_mapped(ti.task):
            return False
        try:
            total = get_mapped_ti_count(ti.task, self.dag_run.run_id, session=session)  # type: ignore[arg-type]
        except (NotFullyPopulated, NotMapped):
            return False
        if total is None or total <= bulk_rows.ROWS_PER_ACTIVATION:
            return False
        context = DepContext(flag_upstream_failed=False, ignore_unmapped_tasks=True, finished_tis=finished)
        if not ti.are_dependencies_met(dep_context=context, session=session):
            return False
        self._expansions[ti.task_id] = _Expansion(template_id=ti.id, total=total)
        self._changed = True
        return True

    def _row_count(self) -> int:
        return int(
            self._session.scalar(
                select(func.count())
                .select_from(TaskInstance)
                .where(TaskInstance.dag_id == self.dag_run.dag_id, TaskInstance.run_id == self.dag_run.run_id)
            )
            or 0
        )

    def _install_seams(self) -> None:
        """Point this DagRun's TI query and readiness check at the in-memory view (instance only)."""
        run = self.dag_run
        original_get_tis = run.get_task_instances
        original_ready = run._get_ready_tis

        def get_task_instances(state: Iterable[Any] | None = None, session: Any = None, **kwargs: Any) -> Any:
            if kwargs:
                return original_get_tis(state=state, session=session or self._session, **kwargs)
            wanted = None if state is None else set(state)
            tis = self._sorted if self._view is None else self._view.tis
            return [ti for ti in tis if wanted is None or ti.state in wanted]

        def get_ready_tis(schedulable: list[TaskInstance], finished: list[TaskInstance], session: Session) -> Any:
            view = self._view
            candidates = []
            for ti in schedulable:
                if ti.task_id in self._expansions or self._big_expansion(ti, finished, session):
                    continue  # its rows are being created a batch per activation
                if view is None or id(ti) in view.candidates:
                    candidates.append(ti)
            # Dependency checks read the finished upstream task instances only: hand them just those.
            upstream = set().union(*(self.ancestor_ids(task_id) for task_id in {ti.task_id for ti in candidates}))
            relevant = [ti for ti in finished if ti.task_id in upstream]
            ready, changed, expanded = original_ready(candidates, relevant, session)
            self._changed = self._changed or bool(changed) or bool(expanded)
            self._expanded = self._expanded or bool(expanded)
            return ready, changed, expanded

        run.get_task_instances = get_task_instances  # type: ignore[method-assign]
        run._get_ready_tis = get_ready_tis  # type: ignore[method-assign,assignment]

    def _turn_view(self) -> _TurnView:
        """What one turn shows Airflow: a view whose size is the run's frontier, not the whole DAG.

        Every task instance with a state is shown, tries in flight first (when nothing new is ready,
        Airflow's "is anything still runnable?" check stops at the first of them). Of those without a
        state, only the ones that could be ready are shown and checked: with a finished upstream (or none),
        at most a turn's capacity of fresh indexes per mapped task, and of those found ready earlier the
        turn's worth with the highest priority. One more per task stands for the rest, unchecked, so that
        Airflow still counts the task as unfinished. A hidden one has no finished upstream, or waits behind
        shown indexes of its own task or behind tries found ready first: it could not change this turn.
        """
        states = [(ti, ti.state) for ti in self._sorted]
        done = {ti.task_id for ti, state in states if state in _FINISHED}
        waiting = {ti.task_id for ti, state in states if state not in _FINISHED}
        troubled = {ti.task_id for ti, state in states if state in _FINISHED and state != TaskInstanceState.SUCCESS}
        found_ready = [self._tis_by_key[key] for key in self._known_ready if key in self._tis_by_key]
        known = {id(ti) for ti in found_ready}
        recheck = {id(ti) for ti in self._pick(found_ready)}
        limit = max(self._turn_capacity, 1)
        may_be_ready: dict[str, bool] = {}
        fresh_mapped: dict[str, int] = {}
        in_flight: list[TaskInstance] = []
        shown: list[TaskInstance] = []
        stand_ins: set[str] = set()
        candidates: set[int] = set()
        for ti, state in states:
            if state in _IN_FLIGHT:
                in_flight.append(ti)
                continue
            if state is not None:
                shown.append(ti)
                if state not in _FINISHED and (id(ti) not in known or id(ti) in recheck):
                    candidates.add(id(ti))
                continue
            task_id = ti.task_id
            if id(ti) in known:
                show = id(ti) in recheck
            else:
                if task_id not in may_be_ready:
                    may_be_ready[task_id] = self._may_be_ready(ti, done) and not self._surely_waits(
                        ti, waiting, troubled
                    )
                show = may_be_ready[task_id]
                if show and ti.map_index >= 0:
                    seen = fresh_mapped[task_id] = fresh_mapped.get(task_id, 0) + 1
                    show = seen <= limit
            if show:
                candidates.add(id(ti))
            elif task_id in stand_ins:
                continue
            else:
                stand_ins.add(task_id)
            shown.append(ti)
        return _TurnView(tis=in_flight + shown, candidates=frozenset(candidates))

    def _surely_waits(self, ti: TaskInstance, waiting: set[str], troubled: set[str]) -> bool:
        """Would Airflow's check of ``ti`` surely find it not ready and change nothing? For an unmapped
        ``all_success`` task while an upstream task has unfinished instances and every finished
        ancestor succeeded (a reducer after a big fan-out: its check reads every index, each turn)."""
        task = ti.task
        if task is None or ti.map_index >= 0 or _is_mapped(task) or task.trigger_rule != TriggerRule.ALL_SUCCESS:
            return False
        return not task.upstream_task_ids.isdisjoint(waiting) and self.ancestor_ids(ti.task_id).isdisjoint(troubled)

    @staticmethod
    def _may_be_ready(ti: TaskInstance, done: set[str]) -> bool:
        """Can any trigger rule make ``ti`` ready? Only with a finished upstream, unless it has none."""
        task = ti.task
        if task is None:
            return True
        upstream = task.upstream_task_ids
        return not upstream or task.trigger_rule == TriggerRule.ALWAYS or not upstream.isdisjoint(done)

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
        return len(self._sorted)

    @property
    def max_active_tasks(self) -> int:
        return int(self.dag.max_active_tasks)

    def run_context(self) -> RunContext:
        return RunContext.of(self.dag_run)

    def ancestor_ids(self, task_id: str) -> frozenset[str]:
        """Every task upstream of ``task_id`` (their XComs are pullable by this task), worked out once."""
        if task_id not in self._ancestors:
            seen: set[str] = set()
            stack = list(self.dag.get_task(task_id).upstream_task_ids)
            while stack:
                tid = stack.pop()
                if tid not in seen:
                    seen.add(tid)
                    stack.extend(self.dag.get_task(tid).upstream_task_ids)
            self._ancestors[task_id] = frozenset(seen)
        return self._ancestors[task_id]

    def task_attribute(self, task_id: str, name: str) -> Any:
        return getattr(self.dag.get_task(task_id), name, None)

    def _ti(self, key: TaskKey) -> TaskInstance:
        ti = self._tis_by_key.get(key)
        if ti is None:
            raise KeyError(f"task instance {key} not in run {self.dag_run.run_id}")
        return ti

    def states(self) -> dict[TaskKey, tuple[str | None, int]]:
        """State and try number of every task instance (cheap: no query)."""
        return {key: (_state_text(ti), ti.try_number) for key, ti in self._tis_by_key.items()}

    def summary(self, key: TaskKey, xcoms: list[XComEntry] | None = None, error: str | None = None) -> TaskSummary:
        ti = self._ti(key)
        return TaskSummary(
            task_id=ti.task_id,
            map_index=ti.map_index,
            state=_state_text(ti),
            try_number=ti.try_number,
            start_date=ti.start_date,
            end_date=ti.end_date,
            xcoms=xcoms or [],
            error=error,
            retry_delay_seconds=ti.retry_delay_override,
            reschedule=self._waits.reschedule(ti) if ti.state == TaskInstanceState.UP_FOR_RESCHEDULE else None,
            deferral=self._waits.deferral(ti),
        )

    def asset_updates(self) -> list[AssetUpdate]:
        """The assets (declared ``outlets``, aliases aside) of every task instance that succeeded."""
        return [
            AssetUpdate(uri=outlet.uri, name=outlet.name, task_id=ti.task_id, map_index=ti.map_index)
            for ti in self._sorted
            if ti.state == TaskInstanceState.SUCCESS
            for outlet in getattr(ti.task, "outlets", None) or []
            if getattr(outlet, "uri", None)
        ]

    def summaries(self, xcoms: dict[TaskKey, list[XComEntry]], errors: dict[TaskKey, str]) -> list[TaskSummary]:
        return [self.summary(key, xcoms.get(key), errors.get(key)) for key in sorted(self._tis_by_key)]

    def restore(self, tasks: Iterable[TaskSummary]) -> None:
        """Take over task states from an earlier execution or Airflow's DB.

        Finished and waiting-for-retry tries are kept (mapped tasks are expanded to the same indexes
        first); anything that was in flight runs again, with its try number carried on.
        """
        tasks = list(tasks)
        session, run = self._session, self.dag_run
        bulk_rows.insert_xcom_markers(
            session,
            run,
            {
                (s.task_id, s.map_index, x.mapped_length, x.key == XCOM_RETURN_KEY)
                for s in tasks
                for x in s.xcoms
                if x.mapped_length is not None or x.key == XCOM_RETURN_KEY
            },
        )
        self._pending = {TaskKey(s.task_id, s.map_index): s for s in tasks}
        highest: dict[str, int] = {}
        for summary in tasks:
            highest[summary.task_id] = max(highest.get(summary.task_id, -1), summary.map_index)
        for task_id, top in sorted(highest.items()):
            unmapped_id = bulk_rows.unmapped_id(session, run.dag_id, run.run_id, task_id)
            if top < 0 or unmapped_id is None:
                continue
            # The expansion the earlier execution made: the unmapped row becomes index 0, copies the rest
            # (thousands of them a batch per activation).
            if top < bulk_rows.ROWS_PER_ACTIVATION:
                self._to_load.extend(bulk_rows.clone_indexes(session, unmapped_id, range(1, top + 1)))
            else:
                self._expansions[task_id] = _Expansion(template_id=unmapped_id, total=top + 1)
            if (loaded := self._tis_by_key.pop(TaskKey(task_id, -1), None)) is not None:
                session.expunge(loaded)
                self._to_load.append(unmapped_id)
            bulk_rows.renumber(session, unmapped_id, 0)
        session.commit()
        for key, ti in list(self._tis_by_key.items()):
            if (summary := self._pending.pop(key, None)) is not None:  # type: ignore[arg-type]
                self._apply(ti, summary)
        self._add([])
        if len(self._to_load) <= bulk_rows.ROWS_PER_ACTIVATION:
            self.catch_up()

    def _apply(self, ti: TaskInstance, summary: TaskSummary) -> None:
        """Set a task instance as an earlier execution (or Airflow's DB) left it."""
        state = None if summary.state is None else task_state(summary.state)
        # A try that was in flight runs again as the same try (Airflow's scheduling adds one).
        ti.try_number = max(summary.try_number - 1, 0) if state in _IN_FLIGHT else summary.try_number
        if state is not None and state not in _IN_FLIGHT:
            ti.state = state
            ti.start_date = summary.start_date
            ti.end_date = summary.end_date
            ti.retry_delay_override = summary.retry_delay_seconds
            self._waits.restore(ti, summary)

    # -- scheduling ---------------------------------------------------------------------------------

    def ready_tasks(self, capacity: int) -> Turn:
        """Ask Airflow what may run now and schedule at most ``capacity`` of those tasks.

        Scheduling goes through Airflow's ``DagRun.schedule_tis``, so tasks that need no execution
        (plain ``EmptyOperator``) succeed on the spot, as under Airflow's scheduler. ``progressed`` says
        whether any state changed without a task starting (skips, upstream failures, empty tasks): the
        caller then asks again at once.
        """
        session = self._session
        self._turn_capacity = max(capacity, 0)
        self._changed = False
        self._expanded = False
        rows = len(self._sorted)
        token = _EXPANSION_SLICE.set(max(self._turn_capacity, 1))
        self._view = self._turn_view()
        try:
            schedulable, callback = self.dag_run.update_state(session=session, execute_callbacks=False)
        finally:
            self._view = None
            _EXPANSION_SLICE.reset(token)
        self._keep_callback(callback)
        schedulable = sorted(schedulable, key=_key)
        no_run = [ti for ti in schedulable if not ti.is_schedulable]
        runnable = [ti for ti in schedulable if ti.is_schedulable]
        to_run = self._admit(runnable)
        admitted = {_key(ti) for ti in to_run}
        self._known_ready.update(_key(ti) for ti in runnable if _key(ti) not in admitted)
        if no_run or to_run:
            self.dag_run.schedule_tis(no_run + to_run, session=session)
        session.commit()
        for ti in no_run + to_run:
            # schedule_tis writes with a bulk UPDATE the ORM objects do not see; only its columns are read
            # back (a full refresh also unpickles columns such as executor_config, a millisecond each)
            session.refresh(ti, attribute_names=_SCHEDULED_COLUMNS)
        if self._expanded or self._row_count() != rows:
            self._refresh()  # an expansion added rows or renumbered the unmapped one
        ready = []
        for ti in to_run:
            self._known_ready.discard(_key(ti))
            if ti.state == TaskInstanceState.SCHEDULED:
                ti.state = TaskInstanceState.QUEUED
                ready.append(ReadyTask(_key(ti), ti.try_number, ti.max_tries))
        session.commit()
        return Turn(ready=ready, progressed=bool(no_run) or self._changed)

    def _admit(self, runnable: list[TaskInstance]) -> list[TaskInstance]:
        """What Airflow's scheduler hands its executor (see :meth:`_pick`), in the usual (task_id,
        map_index) order, so tries start in the same order as ever whenever capacity is not short."""
        return sorted(self._pick(runnable), key=_key)

    def _pick(self, tis: list[TaskInstance]) -> list[TaskInstance]:
        """The highest ``priority_weight`` first (then map index), at most the turn's capacity, skipping
        task instances whose task already has as many active tries as its ``max_active_tis_per_dagrun`` /
        ``max_active_tis_per_dag`` (both counted within this run) allows."""
        active: dict[str, int] = {}
        picked: list[TaskInstance] = []
        for ti in sorted(tis, key=_priority_order):
            if len(picked) >= self._turn_capacity:
                break
            limit = _active_limit(ti.task)
            if limit is not None:
                if ti.task_id not in active:
                    active[ti.task_id] = sum(1 for t in self._sorted if t.task_id == ti.task_id and t.state in _ACTIVE)
                if active[ti.task_id] >= limit:
                    continue
                active[ti.task_id] += 1
            picked.append(ti)
        return picked

    def priority_key(self, key: TaskKey) -> int | None:
        """Temporal's priority key (1 = first, 5 = last) for the task's ``priority_weight``, relative to
        the weights of this run's tasks; ``None`` when every task weighs the same."""
        if self._weights is None:  # once per set of rows, not once per try started (10,000 rows each)
            weights = [ti.priority_weight or 0 for ti in self._sorted]
            self._weights = min(weights, default=0), max(weights, default=0)
        low, high = self._weights
        if high == low:
            return None
        weight = self._ti(key).priority_weight or 0
        return 1 + round(4 * (high - weight) / (high - low))

    def mark_running(self, key: TaskKey, when: datetime) -> None:
        ti = self._ti(key)
        ti.state = TaskInstanceState.RUNNING
        ti.start_date = when
        self._session.commit()

    def record_result(self, result: TaskExecutionResult) -> None:
        """Store one try's outcome the way Airflow's Execution API would."""
        session = self._session
        ti = self._ti(TaskKey(result.task_id, result.map_index))
        ti.state = task_state(result.state)
        ti.start_date = result.start_date
        ti.end_date = result.end_date
        ti.duration = (result.end_date - result.start_date).total_seconds()
        ti.hostname = result.hostname or ""
        ti.retry_delay_override = result.retry_delay_seconds if ti.state == TaskInstanceState.UP_FOR_RETRY else None
        self._record_xcoms(ti.task_id, ti.map_index, ti.end_date, result.xcoms)
        if result.skipped_task_ids:
            self._skip(result.skipped_task_ids)
        self._waits.record(ti, result)
        session.commit()

    def _record_xcoms(self, task_id: str, map_index: int, when: datetime | None, xcoms: Iterable[XComEntry]) -> None:
        """What Airflow's expansion reads: ``TaskMap`` lengths, and a row per return value (a task mapped
        over a mapped task's outputs has as many indexes as it has return values). Values stay out."""
        session, run = self._session, self.dag_run
        for entry in xcoms:
            if entry.mapped_length is not None:
                session.merge(
                    TaskMap(
                        dag_id=run.dag_id,
                        task_id=task_id,
                        run_id=run.run_id,
                        map_index=map_index,
                        length=entry.mapped_length,
                        keys=None,
                    )
                )
            if entry.key == XCOM_RETURN_KEY and map_index >= 0:
                session.merge(
                    XComModel(
                        dag_run_id=run.id,
                        task_id=task_id,
                        map_index=map_index,
                        key=XCOM_RETURN_KEY,
                        dag_id=run.dag_id,
                        run_id=run.run_id,
                        value=None,
                        timestamp=when or run.start_date,
                    )
                )

    def record_lost_try(self, key: TaskKey, when: datetime) -> str:
        """A try that produced no outcome (its process died, or its worker kept failing): one failed
        Airflow try, put up for retry when Airflow's retry rules allow."""
        ti = self._ti(key)
        ti.end_date = when
        ti.retry_delay_override = None
        ti.state = TaskInstanceState.UP_FOR_RETRY if ti.is_eligible_to_retry() else TaskInstanceState.FAILED
        self._session.commit()
        return str(ti.state)

    def set_state(self, key: TaskKey, state: str | None, when: datetime) -> bool:
        """A user's mark from Airflow's UI or REST API (``success``, ``failed`` or ``skipped``), or a clear
        (``None``: it runs again, with its ``retries`` anew), as Airflow leaves the row. False if the run
        has no such task instance."""
        ti = self._tis_by_key.get(key)
        marked = None if state is None else task_state(state)
        if marked is not None and marked not in _MARKABLE:
            raise InvalidTaskState(f"a task instance can be marked {sorted(_MARKABLE)}, not {state!r}")
        if ti is None:
            return False
        ti.state = marked
        if marked is None:
            ti.end_date = None
            ti.max_tries = ti.try_number + (ti.task.retries if ti.task is not None else 0)
            ti.next_method = ti.next_kwargs = None
        else:
            ti.start_date = ti.start_date or when
            ti.end_date = when
        self._known_ready.discard(key)
        self._session.commit()
        return True

    def _skip(self, task_ids: Iterable[str]) -> None:
        wanted = set(task_ids)
        for ti in self._sorted:
            if ti.task_id in wanted and ti.state not in _FINISHED:
                ti.state = TaskInstanceState.SKIPPED

    def reschedule(self, key: TaskKey) -> Reschedule | None:
        """A reschedule-mode sensor's earlier pokes of its current try."""
        return self._waits.reschedule(self._ti(key))

    def next_poke_at(self) -> datetime | None:
        """Earliest moment a sensor waiting in ``up_for_reschedule`` may poke again (its own date)."""
        return self._waits.next_poke_at(self._sorted)

    def resume_point(self, key: TaskKey) -> tuple[str | None, dict[str, Any] | None]:
        """The method (and its kwargs, with the trigger's event) a resumed deferred try runs."""
        ti = self._ti(key)
        return ti.next_method, ti.next_kwargs

    def current_try(self, key: TaskKey) -> ReadyTask:
        """The task instance's try as it stands (a deferred task's trigger belongs to it)."""
        ti = self._ti(key)
        return ReadyTask(key, ti.try_number, ti.max_tries)

    def deferrals(self) -> dict[TaskKey, Deferral]:
        """Every deferred task instance and what it waits for."""
        found = {key: self._waits.deferral(ti) for key, ti in sorted(self._tis_by_key.items())}
        return {key: deferral for key, deferral in found.items() if deferral is not None}

    def resume_deferred(self, key: TaskKey, outcome: TriggerOutcome, when: datetime) -> ReadyTask | None:
        """Wake a deferred task instance: the try to start again, or ``None`` when the event ended it."""
        ti = self._ti(key)
        if ti.state != TaskInstanceState.DEFERRED:
            return None
        resumed = self._waits.resume(ti, outcome, when)
        self._session.commit()
        return ReadyTask(key, ti.try_number, ti.max_tries) if resumed else None

    def next_retry_at(self) -> datetime | None:
        """Earliest moment a task waiting in ``up_for_retry`` may run again (Airflow's own delay)."""
        times = [ti.next_retry_datetime() for ti in self._sorted if ti.state == TaskInstanceState.UP_FOR_RETRY]
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
        """End the run as Airflow's scheduler does when ``dagrun_timeout`` passes: failed, every unfinished
        task instance skipped, the failure callback asked for with reason ``timed_out``. Nothing may run."""
        unfinished = [ti for ti in self._sorted if ti.state not in _FINISHED]
        last = max(unfinished, key=lambda ti: ti.start_date or datetime.min.replace(tzinfo=UTC), default=None)
        self.dag_run.set_state(DagRunState.FAILED)
        self.dag_run.end_date = when
        for ti in unfinished:
            ti.state = TaskInstanceState.SKIPPED
        self._session.commit()
        if self.dag.has_on_failure_callback:
            self._keep_callback(
                self.dag_run.produce_dag_callback(dag=self.dag, success=False, relevant_ti=last, reason="timed_out")
            )

    def fail_unfinished(self, when: datetime) -> None:
        """Cancel the run: unfinished task instances end ``failed`` / ``upstream_failed``; run ``failed``."""
        for ti in self._sorted:
            if ti.state in _STARTED:
                ti.state = TaskInstanceState.FAILED
                ti.end_date = when
            elif ti.state not in _FINISHED:
                ti.state = TaskInstanceState.UPSTREAM_FAILED
        self.dag_run.set_state(DagRunState.FAILED)
        self.dag_run.end_date = when
        self._session.commit()

    # -- the run before this one (depends_on_past) ---------------------------------------------------

    def past_dependent_task_ids(self) -> list[str]:
        """Tasks whose readiness looks at the previous run: ``depends_on_past`` ones, and the direct
        downstream of ``wait_for_downstream`` ones (Airflow checks those too)."""
        wanted: set[str] = set()
        for task in self.dag.tasks:
            if task.depends_on_past:
                wanted.add(task.task_id)
            if getattr(task, "wait_for_downstream", False):
                wanted.update(task.downstream_task_ids)
        return sorted(wanted)

    def set_previous_run(self, previous: PreviousRun) -> None:
        """Mirror the previous run (as Airflow's DB has it now) into this DB, where Airflow's own
        ``depends_on_past`` check finds it; called again when it may have changed."""
        session = self._session
        run = session.scalar(select(DagRun).where(DagRun.run_id == previous.run_id))
        if run is None:
            run = DagRun(
                dag_id=self.dag.dag_id,
                run_id=previous.run_id,
                logical_date=previous.logical_date,
                run_after=previous.logical_date,
                run_type=previous.run_type,
                state=DagRunState(previous.state),
            )
            session.add(run)
            session.flush()
        run.state = DagRunState(previous.state)
        for summary in previous.tasks:
            ti = session.scalar(
                select(TaskInstance).where(
                    TaskInstance.run_id == previous.run_id,
                    TaskInstance.task_id == summary.task_id,
                    TaskInstance.map_index == summary.map_index,
                )
            )
            if ti is None:
                if not self.dag.has_task(summary.task_id):
                    continue  # a task this DAG version no longer has
                ti = TaskInstance(
                    self.dag.get_task(summary.task_id),
                    self.dag_run.created_dag_version_id,
                    run_id=previous.run_id,
                    map_index=summary.map_index,
                )
                session.add(ti)
            ti.state = None if summary.state is None else task_state(summary.state)
        session.commit()

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
