"""Which of the task instances Airflow found ready start this turn, and in which order.

What Airflow's scheduler does before it hands tries to its executor, within one run: the highest
``priority_weight`` (with its ``weight_rule``) first, then map index; at most the turn's capacity
(the DAG's ``max_active_tasks`` less the tries running); and a task held to its
``max_active_tis_per_dagrun`` / ``max_active_tis_per_dag`` (both counted within this run here; across
runs a pool workflow or Airflow's own pool rows count the latter). Also each try's Temporal priority
key, from its weight relative to the run's other tasks. Reads the run's rows, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.models.taskinstance import TaskInstance

from temporal_airflow.workflows.rows import RunRows, key_of
from temporal_airflow.workflows.states import ACTIVE
from temporal_airflow.workflows.values import TaskKey


def priority_order(ti: TaskInstance) -> tuple[int, int, str]:
    """Airflow's scheduler order: ``priority_weight`` descending, then map index (then task id)."""
    return -(ti.priority_weight or 0), ti.map_index, ti.task_id


def active_limit(task: Any) -> int | None:
    """The tighter of a task's ``max_active_tis_per_dagrun`` and ``max_active_tis_per_dag``, if any."""
    limits = [
        limit
        for limit in (getattr(task, "max_active_tis_per_dagrun", None), getattr(task, "max_active_tis_per_dag", None))
        if limit is not None
    ]
    return min(limits, default=None)


def pick(tis: Sequence[TaskInstance], capacity: int, every: Sequence[TaskInstance]) -> list[TaskInstance]:
    """The highest ``priority_weight`` first (then map index), at most ``capacity``, skipping task
    instances whose task already has as many active tries (among ``every``) as its limit allows."""
    active: dict[str, int] = {}
    picked: list[TaskInstance] = []
    for ti in sorted(tis, key=priority_order):
        if len(picked) >= capacity:
            break
        limit = active_limit(ti.task)
        if limit is not None:
            if ti.task_id not in active:
                active[ti.task_id] = sum(1 for t in every if t.task_id == ti.task_id and t.state in ACTIVE)
            if active[ti.task_id] >= limit:
                continue
            active[ti.task_id] += 1
        picked.append(ti)
    return picked


def admit(runnable: Sequence[TaskInstance], capacity: int, every: Sequence[TaskInstance]) -> list[TaskInstance]:
    """What Airflow's scheduler hands its executor (see :func:`pick`), in the usual (task_id, map_index)
    order, so tries start in the same order as ever whenever capacity is not short."""
    return sorted(pick(runnable, capacity, every), key=key_of)


class PriorityKeys:
    """Temporal's priority key of each try, from the run's spread of ``priority_weight``."""

    def __init__(self, rows: RunRows) -> None:
        self._rows = rows
        self._weights: tuple[int, int] | None = None
        self._generation = -1

    def __call__(self, key: TaskKey) -> int | None:
        """1 = first, 5 = last, relative to the weights of this run's tasks; ``None`` when every task
        weighs the same."""
        if self._generation != self._rows.generation:  # once per set of rows, not once per try started
            weights = [ti.priority_weight or 0 for ti in self._rows.ordered]
            self._weights = min(weights, default=0), max(weights, default=0)
            self._generation = self._rows.generation
        assert self._weights is not None
        low, high = self._weights
        if high == low:
            return None
        weight = self._rows.ti(key).priority_weight or 0
        return 1 + round(4 * (high - weight) / (high - low))
