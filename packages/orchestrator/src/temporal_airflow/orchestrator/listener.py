"""Airflow listener: installs the scheduler seam and hands running managed DagRuns to Temporal."""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow.listeners import hookimpl

from temporal_airflow.orchestrator import seam
from temporal_airflow.orchestrator.bridge import TemporalBridge
from temporal_airflow.orchestrator.config import TemporalSettings
from temporal_airflow.orchestrator.managed import ManagedDags

log = logging.getLogger(__name__)
_bridge: TemporalBridge | None = None
_managed: ManagedDags | None = None


@hookimpl
def on_starting(component: Any) -> None:
    """In every Airflow job process: install the scheduler seam (or refuse to run a scheduler)."""
    global _managed
    if _managed is not None:
        return
    settings = TemporalSettings.load()
    _managed = ManagedDags(settings)
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
    if _bridge is None and _managed is not None:
        _bridge = TemporalBridge(settings, _managed)
        _bridge.start()


@hookimpl
def before_stopping(component: Any) -> None:
    global _bridge
    if _bridge is not None:
        _bridge.stop()
        _bridge = None


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """Hand a managed run to Temporal once the scheduler's transaction that started it commits."""
    if _bridge is None or _managed is None or not _managed(dag_run):
        return
    from sqlalchemy import event
    from sqlalchemy.orm import object_session

    bridge, key = _bridge, (dag_run.dag_id, dag_run.run_id)
    session = object_session(dag_run)
    if session is None:
        bridge.hand_over(*key)
        return
    event.listen(session, "after_commit", lambda _session: bridge.hand_over(*key), once=True)
