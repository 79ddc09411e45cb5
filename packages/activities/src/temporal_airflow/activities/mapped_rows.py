"""Task-instance rows in Airflow's DB for every index the workflow expanded (deep mode).

The deep workflow expands mapped tasks in its own copy of the run, as Airflow's scheduler would. Airflow's
DB must hold the same rows before a try of an index starts or a state of one is mirrored: the first of
those to find its row missing expands the mapped task in the DB with Airflow's own expansion on the run's
DAG version (:func:`temporal_airflow.activities.airflow_compat.expand_mapped_task`; upstream lengths come
from the task map Airflow's Execution API wrote when the upstream pushed its XCom). A row that is still
missing after that is an error naming it, never a silent drop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from temporal_airflow.activities.airflow_compat import expand_mapped_task


class MissingTaskInstance(LookupError):
    """No row for a task instance, and expanding its mapped task did not create one."""


def _select(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    return session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
        )
    )


def task_instance_row(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """The row of ``task_id[map_index]``, expanding its mapped task in the DB first when needed."""
    ti = _select(session, dag_id, run_id, task_id, map_index)
    if ti is not None or map_index < 0:
        if ti is None:
            raise MissingTaskInstance(f"no task instance {dag_id}.{task_id} in run {run_id}")
        return ti
    _expand(session, dag_id, run_id, task_id)
    ti = _select(session, dag_id, run_id, task_id, map_index)
    if ti is None:
        raise MissingTaskInstance(
            f"no task instance {dag_id}.{task_id}[{map_index}] in run {run_id}, even after expanding "
            f"{task_id} in Airflow's DB"
        )
    return ti


def _expand(session: Any, dag_id: str, run_id: str, task_id: str) -> None:
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if dag_run is None:
        raise MissingTaskInstance(f"no DagRun {dag_id}/{run_id}")
    dag = DBDagBag().get_dag_for_run(dag_run, session=session)
    if dag is None or not dag.has_task(task_id):
        raise MissingTaskInstance(f"DAG {dag_id} of run {run_id} has no task {task_id}")
    try:
        with session.begin_nested():
            expand_mapped_task(session, dag.get_task(task_id), run_id)
    except IntegrityError:
        pass  # another try expanded it at the same moment: its rows are there now
