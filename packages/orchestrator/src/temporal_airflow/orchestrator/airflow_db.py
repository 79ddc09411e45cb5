"""The bridge's reads and writes in Airflow's metadata DB (blocking: the bridge calls them in threads).

Every write is conditional on what the bridge saw: a run is only ended while it is still ``running``
for the clear number its workflow ran, under the DagRun's row lock, so a user's mark (success/failed
in the UI or REST API), a clear, or the workflow's own final sync that landed meanwhile always wins.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from temporal_airflow.orchestrator.ids import RunRef
from temporal_airflow.orchestrator.managed import RUNS, forget_deleted_runs

log = logging.getLogger(__name__)

#: Notes starting with this were written by the plugin (and may be rewritten); others are the user's.
NOTE_PREFIX = "Runs on Temporal"


@dataclass(frozen=True)
class RunRow:
    """A DagRun as the bridge needs it: state and clear number (``state`` is ``None`` if deleted)."""

    state: str | None
    clear_number: int = 0


def running_managed_runs() -> list[RunRef]:
    """Every ``running`` DagRun recorded as Temporal's, with its current clear number (one query)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    query = (
        select(DagRun.dag_id, DagRun.run_id, DagRun.clear_number)
        .join(RUNS, RUNS.c.dag_run_id == DagRun.id)
        .where(DagRun.state == DagRunState.RUNNING, RUNS.c.managed, RUNS.c.run_id == DagRun.run_id)
    )
    with create_session() as session:
        return [RunRef(d, r, int(c or 0)) for d, r, c in session.execute(query)]


def run_row(dag_id: str, run_id: str) -> RunRow:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(DagRun.state, DagRun.clear_number).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
    if row is None:
        return RunRow(None)
    return RunRow(None if row[0] is None else str(row[0]), int(row[1] or 0))


def conf_size(run: RunRef) -> int | None:
    """Bytes of the run's conf as JSON, ``None`` unless the run is ``running`` for ``run.clear_number``."""
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        dag_run = _locked(run, session)
        if dag_run is None or dag_run.state != DagRunState.RUNNING:
            return None
        return len(json.dumps(dag_run.conf or {}).encode())


def note_run(run: RunRef, note: str) -> None:
    """Set the run's note, unless its user wrote one (the trigger API and UI take a note)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = _locked(run, session)
        if dag_run is not None:
            _set_note(dag_run, note)


def end_run(run: RunRef, state: str, note: str) -> bool:
    """Give a still-running DagRun its final state; its unfinished tasks end too. True if it was ended.

    Tasks that were trying (``running``, ``queued``, ``scheduled``, waiting for a retry...) become
    ``failed``, tasks that never started ``upstream_failed``: none is left looking alive.
    """
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    with create_session() as session:
        dag_run = _locked(run, session)
        if dag_run is None or dag_run.state != DagRunState.RUNNING:
            return False
        for ti in dag_run.get_task_instances(state=list(State.unfinished), session=session):
            ending = TaskInstanceState.UPSTREAM_FAILED if ti.state is None else TaskInstanceState.FAILED
            ti.set_state(ending, session=session)
        dag_run.set_state(DagRunState(state))
        _set_note(dag_run, note)
        return True


def forget_deleted() -> None:
    from airflow.utils.session import create_session

    with create_session() as session:
        if gone := forget_deleted_runs(session):
            log.info("Forgot the Temporal decisions of %d deleted DagRuns", gone)


def _locked(run: RunRef, session: Any) -> Any:
    """The DagRun, row-locked for this transaction, if it still has ``run.clear_number``."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    query = select(DagRun).where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id).with_for_update()
    dag_run = session.scalar(query)
    if dag_run is None or int(dag_run.clear_number or 0) != run.clear_number:
        return None
    return dag_run


def _set_note(dag_run: Any, note: str) -> None:
    current = dag_run.note
    if current != note and (not current or current.startswith(NOTE_PREFIX)):
        dag_run.note = note
