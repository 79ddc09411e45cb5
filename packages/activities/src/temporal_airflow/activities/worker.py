"""The activity worker: Airflow tasks (each try in its own process), deferred tasks' triggers, DAG
parsing and DB sync."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.activities.sync_activities import SYNC_ACTIVITIES
from temporal_airflow.activities.task_activities import TaskActivities
from temporal_airflow.activities.trigger_activities import TRIGGER_ACTIVITIES
from temporal_airflow.workflows.worker import activity_task_queue


def activities(client: Client) -> list[Callable[..., Any]]:
    """Every activity, sharing the payload store of the client's data converter."""
    storage = client.data_converter.external_storage
    return [
        *TaskActivities(storage.drivers[0] if storage else None).activities(),
        *TRIGGER_ACTIVITIES,
        *SYNC_ACTIVITIES,
    ]


def max_concurrent_tasks() -> int:
    """``TEMPORAL_AIRFLOW_MAX_CONCURRENT_TASKS``, default: number of CPUs (each task is a process)."""
    return int(os.environ.get("TEMPORAL_AIRFLOW_MAX_CONCURRENT_TASKS", os.cpu_count() or 2))


def create_activity_worker(client: Client, task_queue: str | None = None, max_concurrent: int | None = None) -> Worker:
    """A worker that never runs more activities (task processes included) at once than ``max_concurrent``.

    Task activities are async (each awaits its own process); the DB-sync activities are blocking and
    run on a thread pool.
    """
    limit = max_concurrent or max_concurrent_tasks()
    return Worker(
        client,
        task_queue=task_queue or activity_task_queue(),
        activities=activities(client),
        activity_executor=ThreadPoolExecutor(max_workers=limit, thread_name_prefix="airflow-sync"),
        max_concurrent_activities=limit,
    )
