"""The activity worker: Airflow tasks (each try in its own process), deferred tasks' triggers, DAG
parsing and DB sync."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.activities.plugin import AirflowActivitiesPlugin, max_concurrent_tasks
from temporal_airflow.models.converter import StorageSettings
from temporal_airflow.workflows.worker import activity_task_queue


def create_activity_worker(client: Client, task_queue: str | None = None, max_concurrent: int | None = None) -> Worker:
    """A worker that never runs more activities (task processes included) at once than ``max_concurrent``.

    Task activities are async (each awaits its own process); the DB-sync activities are blocking and
    run on the plugin's thread pool. Large XCom values go to the payload store of the client's converter.
    """
    external = client.data_converter.external_storage
    storage = StorageSettings(driver=external.drivers[0] if external else None)
    return Worker(
        client,
        task_queue=task_queue or activity_task_queue(),
        plugins=[AirflowActivitiesPlugin(storage)],
        max_concurrent_activities=max_concurrent or max_concurrent_tasks(),
    )
