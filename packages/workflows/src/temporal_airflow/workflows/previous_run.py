"""The run before this one, for ``depends_on_past`` and ``wait_for_downstream`` (deep mode).

Airflow's own dependency check reads the previous run's task instances from its DB. Inside a workflow
that DB is the run's private one, so the deep workflow hands over the previous run as Airflow's DB has
it (:class:`~temporal_airflow.models.PreviousRun`) and :func:`mirror` writes it there, again whenever it
may have changed. Which tasks need it at all: :func:`past_dependent_task_ids`.
"""

from __future__ import annotations

from typing import Any

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.state import DagRunState
from sqlalchemy import select
from sqlalchemy.orm import Session

from temporal_airflow.models import PreviousRun
from temporal_airflow.workflows.states import task_state


def past_dependent_task_ids(dag: Any) -> list[str]:
    """Tasks whose readiness looks at the previous run: ``depends_on_past`` ones, and the direct
    downstream of ``wait_for_downstream`` ones (Airflow checks those too)."""
    wanted: set[str] = set()
    for task in dag.tasks:
        if task.depends_on_past:
            wanted.add(task.task_id)
        if getattr(task, "wait_for_downstream", False):
            wanted.update(task.downstream_task_ids)
    return sorted(wanted)


def mirror(session: Session, dag: Any, dag_run: DagRun, previous: PreviousRun) -> None:
    """Mirror the previous run (as Airflow's DB has it now) into the run's DB, where Airflow's own
    ``depends_on_past`` check finds it; called again when it may have changed."""
    run = session.scalar(select(DagRun).where(DagRun.run_id == previous.run_id))
    if run is None:
        run = DagRun(
            dag_id=dag.dag_id,
            run_id=previous.run_id,
            logical_date=previous.logical_date,
            run_after=previous.logical_date,
            run_type=previous.run_type,
            state=DagRunState(previous.state),
        )
        session.add(run)
        session.flush()
    run.state = DagRunState(previous.state)
    for summary in previous.tasks:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.run_id == previous.run_id,
                TaskInstance.task_id == summary.task_id,
                TaskInstance.map_index == summary.map_index,
            )
        )
        if ti is None:
            if not dag.has_task(summary.task_id):
                continue  # a task this DAG version no longer has
            ti = TaskInstance(
                dag.get_task(summary.task_id),
                dag_run.created_dag_version_id,
                run_id=previous.run_id,
                map_index=summary.map_index,
            )
            session.add(ti)
        ti.state = None if summary.state is None else task_state(summary.state)
    session.commit()
