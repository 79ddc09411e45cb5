"""Airflow listener: installs the scheduler seam, records each run's decision when it starts running and
hands the managed ones to Temporal; queues the task marks users make in the UI or REST API."""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow.listeners import hookimpl

from temporal_airflow.orchestrator import prompt_start, seam
from temporal_airflow.orchestrator.bridge import TemporalBridge
from temporal_airflow.orchestrator.config import TemporalSettings
from temporal_airflow.orchestrator.ids import RunRef
from temporal_airflow.orchestrator.managed import ManagedRuns, create_table
from temporal_airflow.orchestrator.marks import MARKS, record_mark

log = logging.getLogger(__name__)
_bridge: TemporalBridge | None = None
_managed: ManagedRuns | None = None


@hookimpl
def on_starting(component: Any) -> None:
    """In every Airflow job process: install the scheduler seam (or refuse to run a scheduler)."""
    global _managed
    if _managed is not None:
        return
    settings = TemporalSettings.load()
    _managed = ManagedRuns(settings)
    try:
        seam.install(_managed, on_scheduler_start=lambda: _start_bridge(settings))
    except seam.SeamUnavailable as err:
        if "scheduler" in sys.argv[1:3]:
            # BaseException on purpose: Airflow swallows listener exceptions, and a scheduler without the
            # seam would run Temporal-managed tasks a second time.
            raise SystemExit(str(err)) from err
        log.warning("temporal-airflow orchestrator inactive in this process: %s", err)


def _start_bridge(settings: TemporalSettings) -> None:
    global _bridge
    if _bridge is None:
        create_table()
        create_table(MARKS)
        sleeper = prompt_start.install() if settings.prompt_start_interval > 0 else None
        _bridge = TemporalBridge(settings, wake_scheduler=sleeper.wake if sleeper is not None else None)
        _bridge.start()


@hookimpl
def before_stopping(component: Any) -> None:
    global _bridge
    if _bridge is not None:
        _bridge.stop()
        _bridge = None


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """Decide (once) whether the run is Temporal's, in the scheduler's transaction that starts it; hand a
    managed run to Temporal once that transaction commits."""
    from sqlalchemy import event
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if _bridge is None or _managed is None or session is None or not _managed.decide(dag_run, session):
        return  # not in a scheduler, or not Temporal's (a detached run is decided when first examined)
    bridge, run = _bridge, RunRef(dag_run.dag_id, dag_run.run_id, int(dag_run.clear_number or 0))
    event.listen(session, "after_commit", lambda _session: bridge.hand_over(run), once=True)


def _queue_user_mark(previous_state: Any, task_instance: Any, state: str) -> None:
    """Airflow's API calls these hooks with ``previous_state=None`` and the ORM row when a user marks a
    task instance; the task runner and the scheduler call them with a previous state or a runtime TI."""
    from airflow.models.taskinstance import TaskInstance

    if previous_state is not None or not isinstance(task_instance, TaskInstance):
        return
    try:
        record_mark(task_instance, state)
    except Exception:
        log.exception("Could not queue the mark of %s for Temporal", task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _queue_user_mark(previous_state, task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _queue_user_mark(previous_state, task_instance, "failed")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _queue_user_mark(previous_state, task_instance, "skipped")
