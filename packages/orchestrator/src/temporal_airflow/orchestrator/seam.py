"""The one place where the plugin changes Airflow's scheduler: it keeps its hands off managed runs.

Stock Airflow 3.3 has no ``DagRunType.EXTERNAL`` and no orchestrator hook. The scheduler still does
what we want for managed runs up to the moment a run starts: it creates runs from timetables and
asset events, honours ``max_active_runs`` and pausing, and moves a queued run to ``running``
(``_start_queued_dagruns``), which fires the ``on_dag_run_running`` listener that hands the run to
Temporal. From then on, two scheduler methods would act on the run's task instances:

* ``SchedulerJobRunner._schedule_dag_run``: evaluates the run and schedules/queues its tasks on an
  executor, fails it on ``dagrun_timeout``;
* ``SchedulerJobRunner._update_dag_run_state_for_paused_dags``: re-evaluates runs of paused DAGs.

:func:`install` wraps exactly these two so that they skip runs of managed DAGs. The rows Temporal
writes have no ``queued_by_job_id``, so the scheduler's other checks (tasks stuck in queued, tasks
without heartbeat, orphan adoption) already leave them alone.

A third wrap, around ``SchedulerJobRunner._execute``, only tells the plugin that this process is a
scheduler (to start the Temporal bridge there and nowhere else).

The wraps are guarded: installed only on Airflow versions they were checked against, and only if the
methods still have the expected signatures; otherwise the scheduler refuses to start (a scheduler
that also ran managed runs' tasks would run them twice).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

SUPPORTED_AIRFLOW = ("3.3.",)
_EXPECTED = {
    "_execute": ["self"],
    "_schedule_dag_run": ["self", "dag_run", "session"],
    "_update_dag_run_state_for_paused_dags": ["self", "session"],
}
_in_paused_pass = threading.local()


class SeamUnavailable(RuntimeError):
    """The installed Airflow does not offer the scheduler seam this plugin needs."""


def check() -> None:
    """Raise :class:`SeamUnavailable` unless the seam matches the installed Airflow."""
    import airflow
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    if not airflow.__version__.startswith(SUPPORTED_AIRFLOW):
        raise SeamUnavailable(
            f"temporal-airflow-orchestrator supports Airflow {', '.join(v + 'x' for v in SUPPORTED_AIRFLOW)}; "
            f"this is Airflow {airflow.__version__}. Refusing to schedule: managed DAG runs could run twice."
        )
    for name, params in _EXPECTED.items():
        method = getattr(SchedulerJobRunner, name, None)
        if method is None or list(inspect.signature(method).parameters)[: len(params)] != params:
            raise SeamUnavailable(f"SchedulerJobRunner.{name} is missing or changed in Airflow {airflow.__version__}")


def install(is_managed: Callable[[Any], bool], on_scheduler_start: Callable[[], None]) -> None:
    """Make the scheduler skip runs for which ``is_managed(dag_run)`` is true, and call
    ``on_scheduler_start`` when a scheduler starts its loop. Idempotent."""
    check()
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dagrun import DagRun

    if getattr(SchedulerJobRunner, "_temporal_seam_installed", False):
        return

    original_execute = SchedulerJobRunner._execute

    @functools.wraps(original_execute)
    def _execute(self: Any) -> Any:
        on_scheduler_start()
        return original_execute(self)

    original_schedule = SchedulerJobRunner._schedule_dag_run

    @functools.wraps(original_schedule)
    def _schedule_dag_run(self: Any, dag_run: Any, session: Any) -> Any:
        if is_managed(dag_run):
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
        if getattr(_in_paused_pass, "active", False) and is_managed(self):
            return [], None
        return original_update_state(self, *args, **kwargs)

    SchedulerJobRunner._execute = _execute  # type: ignore[method-assign]
    SchedulerJobRunner._schedule_dag_run = _schedule_dag_run  # type: ignore[method-assign]
    SchedulerJobRunner._update_dag_run_state_for_paused_dags = _update_dag_run_state_for_paused_dags  # type: ignore[method-assign]
    DagRun.update_state = update_state  # type: ignore[method-assign]
    SchedulerJobRunner._temporal_seam_installed = True  # type: ignore[attr-defined]
