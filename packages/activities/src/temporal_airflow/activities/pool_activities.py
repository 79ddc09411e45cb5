"""Airflow's pools for Temporal-run tasks (deep mode): a try takes its pool slots before it starts.

Airflow counts a pool's occupied slots from the task instances in it that are queued or running (and
deferred, if the pool says so). Its scheduler queues a task instance only while the pool has room,
holding the pool rows locked; ``acquire_pool_slot`` does the same for a workflow's try, under the same
locks (Airflow's own ``Pool.slots_stats(lock_rows=True)``): it queues the try's row once the pool has
``pool_slots`` open. From then until the try ends the slots are taken, for every run and for the
scheduler's own tasks alike, and Airflow's Pools page counts them; a pool resized in the UI applies to
the next acquisition.

A task's ``max_active_tis_per_dag`` is counted the same way, under the same locks: the try waits while
as many task instances of its task, in any run, are queued or running (as the scheduler counts them).
Tasks in ``default_pool`` take no slots of it here (Temporal-run tries are not counted against it).

A full pool or task limit (or the pool rows locked by a scheduler at that instant) is a retryable, benign
error (logged at DEBUG level only): Temporal retries
the activity with backoff on the server, so waiting for a slot adds no event to the run's history and
holds no worker slot. A pool that does not exist, or has fewer slots than the task needs, can never admit
the try: a non-retryable error that names the pool, and the try fails with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from temporal_airflow.activities.deep_tries import queue_try, task_instance
from temporal_airflow.models import (
    ACQUIRE_POOL_SLOT_ACTIVITY,
    DAG_NOT_FOUND_ERROR,
    DEFAULT_POOL,
    POOL_FULL_ERROR,
    POOL_UNAVAILABLE_ERROR,
    ActivityTaskInput,
)

#: Waiting for a slot is expected, not a failure: logged at DEBUG level, no failure metrics.
_WAITING = ApplicationErrorCategory.BENIGN


@activity.defn(name=ACQUIRE_POOL_SLOT_ACTIVITY)
def acquire_pool_slot(task: ActivityTaskInput) -> None:
    """Queue the try's task instance once its pool and its task's limit have room (see the module docstring)."""
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    run = task.run
    with create_session() as session:
        ti = task_instance(session, task)
        if ti is None:
            raise ApplicationError(
                f"no task instance {run.dag_id}.{task.task_id} in run {run.run_id}",
                type=DAG_NOT_FOUND_ERROR,
                non_retryable=True,
            )
        if ti.try_number == task.try_number and ti.state == TaskInstanceState.QUEUED:
            return  # taken already (this activity's earlier attempt committed, its reply was lost)
        try:
            stats = Pool.slots_stats(lock_rows=True, session=session)
        except OperationalError:
            raise ApplicationError(
                "pool rows locked by a scheduler; trying again", type=POOL_FULL_ERROR, category=_WAITING
            ) from None
        if task.max_active_tis_per_dag:
            active = session.scalar(
                select(func.count()).where(
                    TaskInstance.dag_id == ti.dag_id,
                    TaskInstance.task_id == ti.task_id,
                    TaskInstance.state.in_([TaskInstanceState.QUEUED, TaskInstanceState.RUNNING]),
                    TaskInstance.id != ti.id,
                )
            )
            if (active or 0) >= task.max_active_tis_per_dag:
                raise ApplicationError(
                    f"{active} tries of {ti.task_id} are queued or running across runs, its "
                    f"max_active_tis_per_dag is {task.max_active_tis_per_dag}; waiting",
                    type=POOL_FULL_ERROR,
                    category=_WAITING,
                )
        if ti.pool == DEFAULT_POOL:
            queue_try(ti, task, session)
            return
        pool = stats.get(ti.pool)
        if pool is None or pool["total"] < ti.pool_slots:
            size = "does not exist" if pool is None else f"has {pool['total']} slots"
            raise ApplicationError(
                f"task {ti.task_id} needs {ti.pool_slots} slot(s) of pool {ti.pool!r}, which {size}",
                type=POOL_UNAVAILABLE_ERROR,
                non_retryable=True,
            )
        if pool["open"] < ti.pool_slots:
            raise ApplicationError(
                f"pool {ti.pool!r} has {pool['open']} of {pool['total']} slots open, {ti.task_id} needs "
                f"{ti.pool_slots}; waiting",
                type=POOL_FULL_ERROR,
                category=_WAITING,
            )
        queue_try(ti, task, session)


POOL_ACTIVITIES: list[Callable[..., Any]] = [acquire_pool_slot]
