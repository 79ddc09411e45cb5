"""Airflow listener: installs the scheduler seam, records each run's decision when it starts running and
hands the managed ones to Temporal."""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow.listeners import hookimpl

from temporal_airflow.orchestrator import seam
from temporal_airflow.orchestrator.bridge import TemporalBridge
from temporal_airflow.orchestrator.config import TemporalSettings
from temporal_airflow.orchestrator.ids import RunRef
from temporal_airflow.orchestrator.managed import ManagedRuns, create_table

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
            raise SystemExit(f"temporal-airflow orchestrator: {err}") from err
        log.warning("temporal-airflow orchestrator inactive in this process: %s", err)


def _start_bridge(settings: TemporalSettings) -> None:
    global _bridge
    if _bridge is None:
        create_table()
        _bridge = TemporalBridge(settings)
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
