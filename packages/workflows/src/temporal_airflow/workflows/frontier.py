"""The scheduling frontier: the task instances one turn shows Airflow, so a turn costs about the frontier.

Airflow's ``DagRun.update_state`` reads every task instance of the run and checks the dependencies of
every one without a state: for a run of thousands that is seconds per turn. :class:`Frontier` replaces,
on this run's own ``DagRun`` object only (:func:`~temporal_airflow.workflows.airflow_compat.install_run_seams`),
its task-instance query with the in-memory rows and its readiness check with one that sees the turn's
view: the task instances that could change this turn (see :meth:`Frontier._view_of`), with only their
finished upstream. Big mapped expansions are handed to :class:`~temporal_airflow.workflows.rows.RunRows`
to create a batch per activation. It also remembers task instances found ready but not admitted, to
recheck a turn's worth of them by priority.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow.exceptions import NotMapped
from airflow.models.expandinput import NotFullyPopulated
from airflow.models.taskinstance import TaskInstance
from airflow.serialization.definitions.mappedoperator import get_mapped_ti_count, is_mapped
from airflow.task.trigger_rule import TriggerRule
from airflow.ti_deps.dep_context import DepContext
from airflow.utils.state import TaskInstanceState
from sqlalchemy.orm import Session

from temporal_airflow.workflows import airflow_compat, bulk_rows
from temporal_airflow.workflows.admission import pick
from temporal_airflow.workflows.rows import Expansion, RunRows
from temporal_airflow.workflows.states import FINISHED, IN_FLIGHT
from temporal_airflow.workflows.values import TaskKey


def is_mapped_task(task: Any) -> bool:
    return task is not None and is_mapped(task)


@dataclass(frozen=True)
class TurnView:
    """The task instances one turn shows Airflow, and (by ``id``) those whose dependencies it checks."""

    tis: list[TaskInstance]
    candidates: frozenset[int]


class Frontier:
    """What each turn of one run shows Airflow (see the module docstring)."""

    def __init__(self, rows: RunRows, dag: Any, dag_run: Any, session: Session) -> None:
        self._rows, self._dag, self._run, self._session = rows, dag, dag_run, session
        #: Found ready by Airflow, not admitted yet.
        self.known_ready: set[TaskKey] = set()
        #: This turn: did Airflow change any state (or expand a mapped task)?
        self.changed = False
        self.expanded = False
        self._capacity = 0
        self._view: TurnView | None = None
        self._ancestors: dict[str, frozenset[str]] = {}
        self._original_get_tis = dag_run.get_task_instances
        self._original_ready = dag_run._get_ready_tis
        airflow_compat.install_run_seams(
            dag_run, get_task_instances=self._get_task_instances, _get_ready_tis=self._get_ready_tis
        )

    @contextmanager
    def turn(self, capacity: int) -> Iterator[None]:
        """While inside, Airflow sees this turn's view, and an expansion hands back a turn's worth."""
        self._capacity = max(capacity, 0)
        self.changed = self.expanded = False
        self._view = self._view_of()
        try:
            with airflow_compat.expansion_slice(max(self._capacity, 1)):
                yield
        finally:
            self._view = None

    def pick(self, tis: list[TaskInstance]) -> list[TaskInstance]:
        return pick(tis, self._capacity, self._rows.ordered)

    def ancestor_ids(self, task_id: str) -> frozenset[str]:
        """Every task upstream of ``task_id`` (their XComs are pullable by this task), worked out once."""
        if task_id not in self._ancestors:
            seen: set[str] = set()
            stack = list(self._dag.get_task(task_id).upstream_task_ids)
            while stack:
                tid = stack.pop()
                if tid not in seen:
                    seen.add(tid)
                    stack.extend(self._dag.get_task(tid).upstream_task_ids)
            self._ancestors[task_id] = frozenset(seen)
        return self._ancestors[task_id]

    # -- the run's seams ---------------------------------------------------------------------------

    def _get_task_instances(self, state: Iterable[Any] | None = None, session: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            return self._original_get_tis(state=state, session=session or self._session, **kwargs)
        wanted = None if state is None else set(state)
        tis = self._rows.ordered if self._view is None else self._view.tis
        return [ti for ti in tis if wanted is None or ti.state in wanted]

    def _get_ready_tis(self, schedulable: list[TaskInstance], finished: list[TaskInstance], session: Session) -> Any:
        view = self._view
        candidates = []
        for ti in schedulable:
            if ti.task_id in self._rows.expansions or self._big_expansion(ti, finished, session):
                continue  # its rows are being created a batch per activation
            if view is None or id(ti) in view.candidates:
                candidates.append(ti)
        # Dependency checks read the finished upstream task instances only: hand them just those.
        upstream = set().union(*(self.ancestor_ids(task_id) for task_id in {ti.task_id for ti in candidates}))
        relevant = [ti for ti in finished if ti.task_id in upstream]
        ready, changed, expanded = self._original_ready(candidates, relevant, session)
        self.changed = self.changed or bool(changed) or bool(expanded)
        self.expanded = self.expanded or bool(expanded)
        return ready, changed, expanded

    def _big_expansion(self, ti: TaskInstance, finished: list[TaskInstance], session: Session) -> bool:
        """Start expanding ``ti``'s mapped task row by row when it is ready and has many indexes."""
        if ti.map_index >= 0 or ti.state is not None or ti.task_id in self._rows.precreated:
            return False
        if not is_mapped_task(ti.task):
            return False
        try:
            total = get_mapped_ti_count(ti.task, self._run.run_id, session=session)  # type: ignore[arg-type]
        except (NotFullyPopulated, NotMapped):
            return False
        if total is None or total <= bulk_rows.ROWS_PER_ACTIVATION:
            return False
        context = DepContext(flag_upstream_failed=False, ignore_unmapped_tasks=True, finished_tis=finished)
        if not ti.are_dependencies_met(dep_context=context, session=session):
            return False
        self._rows.expansions[ti.task_id] = Expansion(template_id=ti.id, total=total)
        self.changed = True
        return True

    # -- the view ----------------------------------------------------------------------------------

    def _view_of(self) -> TurnView:
        """What one turn shows Airflow: a view whose size is the run's frontier, not the whole DAG.

        Every task instance with a state is shown, tries in flight first (when nothing new is ready,
        Airflow's "is anything still runnable?" check stops at the first of them). Of those without a
        state, only the ones that could be ready are shown and checked: with a finished upstream (or none),
        at most a turn's capacity of fresh indexes per mapped task, and of those found ready earlier the
        turn's worth with the highest priority. One more per task stands for the rest, unchecked, so that
        Airflow still counts the task as unfinished. A hidden one has no finished upstream, or waits behind
        shown indexes of its own task or behind tries found ready first: it could not change this turn.
        """
        states = [(ti, ti.state) for ti in self._rows.ordered]
        done = {ti.task_id for ti, state in states if state in FINISHED}
        waiting = {ti.task_id for ti, state in states if state not in FINISHED}
        troubled = {ti.task_id for ti, state in states if state in FINISHED and state != TaskInstanceState.SUCCESS}
        found_ready = [self._rows.by_key[key] for key in self.known_ready if key in self._rows.by_key]
        known = {id(ti) for ti in found_ready}
        recheck = {id(ti) for ti in self.pick(found_ready)}
        limit = max(self._capacity, 1)
        may_be_ready: dict[str, bool] = {}
        fresh_mapped: dict[str, int] = {}
        in_flight: list[TaskInstance] = []
        shown: list[TaskInstance] = []
        stand_ins: set[str] = set()
        candidates: set[int] = set()
        for ti, state in states:
            if state in IN_FLIGHT:
                in_flight.append(ti)
                continue
            if state is not None:
                shown.append(ti)
                if state not in FINISHED and (id(ti) not in known or id(ti) in recheck):
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
        return TurnView(tis=in_flight + shown, candidates=frozenset(candidates))

    def _surely_waits(self, ti: TaskInstance, waiting: set[str], troubled: set[str]) -> bool:
        """Would Airflow's check of ``ti`` surely find it not ready and change nothing? For an unmapped
        ``all_success`` task while an upstream task has unfinished instances and every finished
        ancestor succeeded (a reducer after a big fan-out: its check reads every index, each turn)."""
        task = ti.task
        if task is None or ti.map_index >= 0 or is_mapped_task(task) or task.trigger_rule != TriggerRule.ALL_SUCCESS:
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
