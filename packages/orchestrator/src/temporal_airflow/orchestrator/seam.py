"""The one place where the plugin changes Airflow's scheduler: it keeps its hands off managed runs.

Stock Airflow 3.3 has no ``DagRunType.EXTERNAL`` and no orchestrator hook. The scheduler still does
what we want for managed runs up to the moment a run starts: it creates runs from timetables and
asset events, honours ``max_active_runs`` and pausing, and moves a queued run to ``running``
(``_start_queued_dagruns``), which fires the ``on_dag_run_running`` listener that records the run's
decision (:mod:`temporal_airflow.orchestrator.managed`) and hands it to Temporal. From then on, the
scheduler must not act on a managed run:

* ``DagRun.get_running_dag_runs_to_examine`` picks the running runs the scheduler examines in one loop
  (at most ``max_dagruns_per_loop_to_schedule``, those examined longest ago first). The wrap adds a
  condition to its query that leaves out runs recorded as managed: they never take a slot from an
  Airflow-run DAG (a managed run never gets a ``last_scheduling_decision``, so it would sort first
  forever and starve the others) and are never row-locked by the scheduler;
* ``SchedulerJobRunner._schedule_dag_run`` evaluates a run and schedules/queues its tasks on an executor,
  fails it on ``dagrun_timeout``: the wrap skips managed runs (here a run without a record, created
  directly in ``running``, gets its decision);
* ``SchedulerJobRunner._update_dag_run_state_for_paused_dags`` re-evaluates runs of paused DAGs: the wrap
  makes ``DagRun.update_state`` a no-op for managed runs during that pass.

The rows Temporal writes have no ``queued_by_job_id``, so the scheduler's other checks (tasks stuck in
queued, tasks without heartbeat, orphan adoption) already leave them alone.

A last wrap, around ``SchedulerJobRunner._execute``, tells the plugin that this process is a scheduler
(to create the decision table and start the Temporal bridge there and nowhere else).

The wraps are guarded by :func:`temporal_airflow.orchestrator.airflow_compat.check`: installed only on the
supported Airflow versions, and only if the methods still have the expected signatures; otherwise the
scheduler refuses to start (a scheduler that also ran managed runs' tasks would run them twice).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from temporal_airflow.orchestrator.airflow_compat import SeamUnavailable, check
from temporal_airflow.orchestrator.managed import ManagedRuns, managed_run_exists

__all__ = ["SeamUnavailable", "check", "install"]

_in_paused_pass = threading.local()


@contextmanager
def _without_managed_runs(session: Any) -> Iterator[None]:
    """While inside, every ORM query of ``DagRun`` on ``session`` leaves out runs recorded as managed."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import event
    from sqlalchemy.orm import with_loader_criteria

    def exclude(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(with_loader_criteria(DagRun, ~managed_run_exists(DagRun)))

    event.listen(session, "do_orm_execute", exclude)
    try:
        yield
    finally:
        event.remove(session, "do_orm_execute", exclude)


def install(managed: ManagedRuns, on_scheduler_start: Callable[[], None]) -> None:
    """Make the scheduler leave alone the runs ``managed`` records as Temporal's, and call
    ``on_scheduler_start`` when a scheduler starts its loop. Idempotent."""
    check()
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dagrun import DagRun
    from sqlalchemy.orm import object_session

    if getattr(SchedulerJobRunner, "_temporal_seam_installed", False):
        return

    original_execute = SchedulerJobRunner._execute

    @functools.wraps(original_execute)
    def _execute(self: Any) -> Any:
        on_scheduler_start()
        return original_execute(self)

    original_examine = DagRun.get_running_dag_runs_to_examine

    @functools.wraps(original_examine)
    def get_running_dag_runs_to_examine(cls: Any, session: Any, **kwargs: Any) -> Any:
        with _without_managed_runs(session):
            return original_examine(session=session, **kwargs)

    original_schedule = SchedulerJobRunner._schedule_dag_run

    @functools.wraps(original_schedule)
    def _schedule_dag_run(self: Any, dag_run: Any, session: Any) -> Any:
        if managed.decide(dag_run, session):
            return None  # Temporal runs this DagRun
        return original_schedule(self, dag_run, session)

    original_paused = SchedulerJobRunner._update_dag_run_state_for_paused_dags

    @functools.wraps(original_paused)
    def _update_dag_run_state_for_paused_dags(self: Any, *args: Any, **kwargs: Any) -> Any:
        _in_paused_pass.active = True
        try:
            return original_paused(self, *args, **kwargs)
        finally:
            _in_paused_pass.active = False

    original_update_state = DagRun.update_state

    @functools.wraps(original_update_state)
    def update_state(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_in_paused_pass, "active", False):
            session = object_session(self)
            decided = managed.recorded(self, session)
            if decided or (decided is None and managed.live(self, session)):
                return [], None
        return original_update_state(self, *args, **kwargs)

    SchedulerJobRunner._execute = _execute  # type: ignore[method-assign]
    DagRun.get_running_dag_runs_to_examine = classmethod(get_running_dag_runs_to_examine)  # type: ignore[method-assign,assignment]
    SchedulerJobRunner._schedule_dag_run = _schedule_dag_run  # type: ignore[method-assign]
    SchedulerJobRunner._update_dag_run_state_for_paused_dags = _update_dag_run_state_for_paused_dags  # type: ignore[method-assign]
    DagRun.update_state = update_state  # type: ignore[method-assign]
    SchedulerJobRunner._temporal_seam_installed = True  # type: ignore[attr-defined]
