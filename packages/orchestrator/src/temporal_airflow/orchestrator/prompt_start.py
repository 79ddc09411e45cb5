"""Prompt start: the scheduler's loop wakes as soon as a managed DAG has a new queued run.

Airflow's scheduler moves queued runs to ``running`` once per loop (``_start_queued_dagruns``), and an
idle loop sleeps ``scheduler_idle_sleep_time`` (1 s) between passes, so a run triggered from the UI or
the REST API waits half a second on average before anything happens. For managed DAGs, whose tasks start
within ~0.15 s of the run starting, that wait is most of the trigger-to-first-task latency.

The bridge watches for queued runs of managed DAGs (one small query every ``interval``, on the partial
index Airflow keeps for queued runs) and cuts the scheduler's idle sleep short when one appears. The
scheduler then starts it with its own logic (``max_active_runs``, pausing, backfills, the
``on_dag_run_running`` hand-over); nothing here changes a row. Runs of other DAGs keep Airflow's timing.

The seam: the scheduler module's ``time`` becomes a proxy whose ``sleep`` can be woken (every other
attribute is the real module's). It is installed only if that name is the standard ``time`` module, as
on the Airflow versions :mod:`temporal_airflow.orchestrator.airflow_compat` checks; otherwise nothing changes and
runs start at the scheduler's own pace.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from datetime import UTC, datetime
from typing import Any

from temporal_airflow.orchestrator.config import TemporalSettings

log = logging.getLogger(__name__)


class WakeableTime:
    """Stands in for the ``time`` module in Airflow's scheduler module: ``sleep`` returns early on
    :meth:`wake`; everything else is the real module's."""

    def __init__(self, real: types.ModuleType) -> None:
        self._real = real
        self._wake = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()


def install() -> WakeableTime | None:
    """Make the scheduler's idle sleep wakeable; ``None`` when Airflow's module is not as expected."""
    from airflow.jobs import scheduler_job_runner

    current = getattr(scheduler_job_runner, "time", None)
    if isinstance(current, WakeableTime):
        return current
    if current is not time:
        log.warning("Airflow's scheduler does not sleep through the time module: runs start at its own pace")
        return None
    sleeper = WakeableTime(time)
    scheduler_job_runner.time = sleeper  # type: ignore[assignment]
    return sleeper


class QueuedRunWatch:
    """Finds queued runs of managed DAGs the scheduler has not been woken for yet."""

    def __init__(self, settings: TemporalSettings) -> None:
        self.settings = settings
        #: The newest queue time seen (runs queued before the bridge started are the scheduler's first
        #: loops' business).
        self._since = datetime.now(UTC)

    def new_managed_runs(self) -> bool:
        """Whether a managed DAG got a queued run since the last call (blocking: one or two queries)."""
        from airflow.models.dag import DagTag
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState
        from sqlalchemy import func, select

        query = select(DagRun.dag_id, DagRun.queued_at).where(
            DagRun.state == DagRunState.QUEUED, DagRun.queued_at > self._since, DagRun.run_after <= func.now()
        )
        with create_session() as session:
            rows = session.execute(query.order_by(DagRun.queued_at.desc()).limit(100)).all()
            if not rows:
                return False
            self._since = rows[0][1] or self._since  # never None: it is later than the last one
            dag_ids = {dag_id for dag_id, _ in rows}
            tags: dict[str, set[str]] = {}
            for dag_id, name in session.execute(select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(dag_ids))):
                tags.setdefault(dag_id, set()).add(name)
        return any(self.settings.manages(dag_id, tags.get(dag_id, set())) for dag_id in dag_ids)
