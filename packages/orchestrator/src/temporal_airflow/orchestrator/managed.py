"""Which DAG runs are Temporal's: decided once per run, and recorded with the run.

A DAG is managed if it carries the managed tag (``temporal``) or its id matches a ``managed_dags`` glob.
Tags change when a DAG file is edited and re-parsed, so deciding from the live tags each time would
hand a run to Temporal (or back to Airflow) in the middle of it and run its tasks twice. The decision
is therefore taken once per DagRun and stored in a small table of the plugin's own,
``temporal_airflow_run`` (``dag_run_id`` primary key, ``dag_id``, ``run_id``, ``managed``):

* normally when the scheduler moves the run to ``running`` (the ``on_dag_run_running`` listener, in the
  scheduler's transaction, so the record commits with the state change);
* otherwise (a run created directly in ``running``, e.g. by a deep workflow started from code) the first
  time the scheduler examines it.

Both happen while the scheduler holds the DagRun's row lock, so two schedulers never decide one run. The
scheduler seam and the Temporal bridge read the record, never the live tags; a cleared run keeps its
decision. Rows are matched on ``dag_run_id`` *and* the run's names, so a row left behind by a deleted run
(or by ``airflow db reset``, which restarts ids) is never taken for another run's; the bridge deletes such
rows. The table is not part of Airflow's schema: the scheduler creates it when it starts.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.models.base import StringID
from sqlalchemy import Boolean, Column, Integer, MetaData, Table, and_, delete, exists, insert, select
from sqlalchemy import inspect as inspect_db
from sqlalchemy.exc import DBAPIError

from temporal_airflow.orchestrator.config import TemporalSettings

log = logging.getLogger(__name__)

RUNS = Table(
    "temporal_airflow_run",
    MetaData(),
    Column("dag_run_id", Integer, primary_key=True, autoincrement=False),
    Column("dag_id", StringID(), nullable=False),
    Column("run_id", StringID(), nullable=False),
    Column("managed", Boolean, nullable=False),
)


def create_table(table: Table = RUNS) -> None:
    """Create one of the plugin's tables if missing (two schedulers starting at once may both try)."""
    from airflow.utils.session import create_session

    try:
        with create_session() as session:
            table.create(session.connection(), checkfirst=True)
    except DBAPIError:
        with create_session() as session:
            if not inspect_db(session.connection()).has_table(table.name):
                raise


def _matches(dag_run_cls: Any) -> Any:
    """The record of a DagRun row: same id and same names (see the module docstring)."""
    return and_(
        RUNS.c.dag_run_id == dag_run_cls.id,
        RUNS.c.dag_id == dag_run_cls.dag_id,
        RUNS.c.run_id == dag_run_cls.run_id,
    )


def managed_run_exists(dag_run_cls: Any) -> Any:
    """SQL condition: this DagRun is recorded as managed (for queries over ``DagRun``)."""
    return exists().where(_matches(dag_run_cls), RUNS.c.managed)


def forget_deleted_runs(session: Any) -> int:
    """Delete the records whose DagRun no longer exists; returns how many."""
    from airflow.models.dagrun import DagRun

    gone = delete(RUNS).where(~exists().where(_matches(DagRun)))
    return int(session.execute(gone).rowcount or 0)


class ManagedRuns:
    """Answers "is this DAG run Temporal's?" from the run's recorded decision."""

    def __init__(self, settings: TemporalSettings) -> None:
        self.settings = settings

    def decide(self, dag_run: Any, session: Any) -> bool:
        """The run's recorded decision, taken now (and recorded in ``session``) if there is none.

        Called with the DagRun row-locked by the scheduler, so no other scheduler decides it meanwhile."""
        decided = self.recorded(dag_run, session)
        if decided is not None:
            return decided
        managed = self.live(dag_run, session)
        session.execute(delete(RUNS).where(RUNS.c.dag_run_id == dag_run.id))  # left by a deleted run with this id
        session.execute(
            insert(RUNS).values(dag_run_id=dag_run.id, dag_id=dag_run.dag_id, run_id=dag_run.run_id, managed=managed)
        )
        log.info("DagRun %s/%s runs on %s", dag_run.dag_id, dag_run.run_id, "Temporal" if managed else "Airflow")
        return managed

    def recorded(self, dag_run: Any, session: Any) -> bool | None:
        """The run's recorded decision, ``None`` if not decided yet."""
        query = select(RUNS.c.managed).where(
            RUNS.c.dag_run_id == dag_run.id, RUNS.c.dag_id == dag_run.dag_id, RUNS.c.run_id == dag_run.run_id
        )
        return session.scalar(query)

    def live(self, dag_run: Any, session: Any) -> bool:
        """What would be decided now, from the DAG's current tags (for runs without a record)."""
        return self.settings.manages(dag_run.dag_id, _dag_tags(dag_run.dag_id, session))


def _dag_tags(dag_id: str, session: Any) -> set[str]:
    from airflow.models.dag import DagTag

    return set(session.scalars(select(DagTag.name).where(DagTag.dag_id == dag_id)))
