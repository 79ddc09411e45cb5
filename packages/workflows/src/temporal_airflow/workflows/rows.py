"""The run's task instances as Airflow's ORM objects, kept in memory, loaded a batch per activation.

Why: a turn must not re-read thousands of rows, and a workflow activation must not build thousands of
ORM objects (Temporal's 2 s deadline). :class:`RunRows` is the cache every other part of the run reads
(``by_key``, ``ordered``), and the one place that grows it: the rows a new DagRun made (handed over by
:func:`temporal_airflow.workflows.airflow_compat.deferred_rows`), a big mapped expansion's indexes
(:mod:`bulk_rows`), the rows an earlier execution left (:meth:`RunRows.restore`), and whatever Airflow
added during a turn (:meth:`RunRows.refresh`). While :attr:`RunRows.catching_up`, the caller runs
:meth:`RunRows.catch_up` once per activation before it schedules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from airflow.models.taskinstance import TaskInstance
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from temporal_airflow.models import TaskSummary
from temporal_airflow.workflows import airflow_compat, bulk_rows
from temporal_airflow.workflows.mapped_outputs import MappedOutputs
from temporal_airflow.workflows.states import IN_FLIGHT, task_state
from temporal_airflow.workflows.values import TaskKey
from temporal_airflow.workflows.wait_records import WaitRecords


def key_of(ti: TaskInstance) -> TaskKey:
    return TaskKey(ti.task_id, ti.map_index)


@dataclass
class Expansion:
    """A mapped task whose index rows are being created, a batch per activation."""

    template_id: Any
    total: int
    next_index: int = 1


class RunRows:
    """The run's task instances in memory, and the rows still to create or load (see the module)."""

    def __init__(
        self,
        session: Session,
        dag: Any,
        dag_run: Any,
        waits: WaitRecords,
        outputs: MappedOutputs,
        new_rows: tuple[Iterator[Any], bool] | None,
    ) -> None:
        self._session, self._dag, self._run, self._waits, self._outputs = session, dag, dag_run, waits, outputs
        self.by_key: dict[TaskKey, TaskInstance] = {}
        #: Every loaded task instance, by (task id, map index).
        self.ordered: list[TaskInstance] = []
        #: Bumped whenever the set of rows changes (what caches of the rows key on).
        self.generation = 0
        #: Rows Airflow made for the new run, still to write; big expansions under way (task id -> rows
        #: still to create); tasks whose indexes were all created that way; rows still to load; carried
        #: states waiting for their rows.
        self._new_rows = new_rows
        self.expansions: dict[str, Expansion] = {}
        self.precreated: set[str] = set()
        self._to_load: list[Any] = []
        self._pending: dict[TaskKey, TaskSummary] = {}

    def ti(self, key: TaskKey) -> TaskInstance:
        ti = self.by_key.get(key)
        if ti is None:
            raise KeyError(f"task instance {key} not in run {self._run.run_id}")
        return ti

    def replace(self, old: TaskInstance, new: TaskInstance) -> None:
        """``new`` is the row of ``old``'s task instance from now on (its next try's row)."""
        if new is old:
            return
        new.task = old.task
        self.by_key[key_of(new)] = new
        self.ordered = [new if ti is old else ti for ti in self.ordered]

    @property
    def catching_up(self) -> bool:
        """Rows still to create or load: call :meth:`catch_up` (one activation each) before scheduling."""
        return bool(self._new_rows or self.expansions or self._to_load)

    def catch_up(self) -> None:
        """Create or load one activation's worth of rows (see :mod:`bulk_rows`)."""
        budget = self._write_new_rows(bulk_rows.ROWS_PER_ACTIVATION)
        for task_id, expansion in sorted(self.expansions.items()):
            indexes = range(expansion.next_index, min(expansion.next_index + budget, expansion.total))
            self._to_load.extend(bulk_rows.clone_indexes(self._session, expansion.template_id, indexes))
            expansion.next_index = indexes.stop
            budget -= len(indexes)
            if expansion.next_index >= expansion.total:
                del self.expansions[task_id]  # Airflow's own expansion now just renumbers the unmapped row
                self.precreated.add(task_id)
            if budget <= 0:
                break
        self._session.commit()
        if budget > 0 and self._to_load:
            batch, self._to_load = self._to_load[:budget], self._to_load[budget:]
            self.add(bulk_rows.load(self._session, batch))

    def _write_new_rows(self, budget: int) -> int:
        """Write a batch of the rows Airflow made for the new run; the budget left."""
        if self._new_rows is None:
            return budget
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
            known = {ti.id for ti in self.ordered} | set(self._to_load)
            ids = bulk_rows.row_ids(self._session, self._run.dag_id, self._run.run_id)
            self._to_load.extend(sorted(ids - known))
        return budget - len(batch)

    def add(self, tis: Iterable[TaskInstance]) -> None:
        """Cache newly loaded rows, applying states carried from an earlier execution."""
        for ti in tis:
            ti.task = self._dag.get_task(ti.task_id)
            self.by_key[key_of(ti)] = ti
            if (summary := self._pending.pop(key_of(ti), None)) is not None:
                self._apply(ti, summary)
        self.ordered = sorted(self.by_key.values(), key=lambda ti: (ti.task_id, ti.map_index))
        self.generation += 1
        self._session.commit()

    def refresh(self) -> None:
        """After Airflow changed rows: re-key those changed in place, load (or queue) rows it added."""
        if self.row_count() == len(self.ordered):
            self.by_key = {key_of(ti): ti for ti in self.ordered}  # renumbered in place, nothing new
            self.add([])
            return
        ids = bulk_rows.row_ids(self._session, self._run.dag_id, self._run.run_id)
        cached = {ti.id: ti for ti in self.ordered}
        self.by_key = {key_of(ti): ti for ti_id, ti in cached.items() if ti_id in ids}
        missing = sorted(ids - cached.keys() - set(self._to_load))
        if len(missing) <= bulk_rows.ROWS_PER_ACTIVATION:
            self.add(bulk_rows.load(self._session, missing))
        else:
            self._to_load.extend(missing)
            self.add([])

    def row_count(self) -> int:
        return int(
            self._session.scalar(
                select(func.count())
                .select_from(TaskInstance)
                .where(TaskInstance.dag_id == self._run.dag_id, TaskInstance.run_id == self._run.run_id)
            )
            or 0
        )

    def restore(self, tasks: Iterable[TaskSummary]) -> None:
        """Take over task states from an earlier execution or Airflow's DB.

        Finished and waiting-for-retry tries are kept (mapped tasks are expanded to the same indexes
        first); anything that was in flight runs again, with its try number carried on.
        """
        tasks = list(tasks)
        session, run = self._session, self._run
        self._outputs.restore(session, run, tasks)
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
                self.expansions[task_id] = Expansion(template_id=unmapped_id, total=top + 1)
            if (loaded := self.by_key.pop(TaskKey(task_id, -1), None)) is not None:
                session.expunge(loaded)
                self._to_load.append(unmapped_id)
            bulk_rows.renumber(session, unmapped_id, 0)
        session.commit()
        for key, ti in list(self.by_key.items()):
            if (summary := self._pending.pop(key, None)) is not None:  # type: ignore[arg-type]
                self._apply(ti, summary)
        self.add([])
        if len(self._to_load) <= bulk_rows.ROWS_PER_ACTIVATION:
            self.catch_up()

    def _apply(self, ti: TaskInstance, summary: TaskSummary) -> None:
        """Set a task instance as an earlier execution (or Airflow's DB) left it."""
        state = None if summary.state is None else task_state(summary.state)
        # A try that was in flight runs again as the same try.
        ti.try_number = (
            airflow_compat.carried_try_number(summary.try_number) if state in IN_FLIGHT else summary.try_number
        )
        if state is not None and state not in IN_FLIGHT:
            ti.state = state
            ti.start_date = summary.start_date
            ti.end_date = summary.end_date
            airflow_compat.set_retry_delay(ti, summary.retry_delay_seconds)
            self._waits.restore(ti, summary)
        self._outputs.restore_row(self._session, self._run, ti, summary)
