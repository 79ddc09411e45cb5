"""The activity worker: Airflow tasks (each try in its own process), deferred tasks' triggers, DAG
parsing and DB sync.

``temporal-airflow-activity-worker`` runs it, next to the DAG files. Airflow is imported only once a
worker is made, so that the command's defaults (:func:`temporal_airflow.models.runtime.quiet_airflow_logs`)
come first.
"""

from __future__ import annotations

import os

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.models.converter import StorageSettings
from temporal_airflow.models.runtime import activity_task_queue, run_workers, worker_parser


def create_activity_worker(client: Client, task_queue: str | None = None, max_concurrent: int | None = None) -> Worker:
    """A worker that never runs more activities (task processes included) at once than ``max_concurrent``.

    Task activities are async (each awaits its own process); the DB-sync activities are blocking and
    run on the plugin's thread pool. Large XCom values go to the payload store of the client's converter.
    """
    from temporal_airflow.activities.plugin import AirflowActivitiesPlugin, max_concurrent_tasks

    external = client.data_converter.external_storage
    storage = StorageSettings(driver=external.drivers[0] if external else None)
    return Worker(
        client,
        task_queue=task_queue or activity_task_queue(),
        plugins=[AirflowActivitiesPlugin(storage)],
        max_concurrent_activities=max_concurrent or max_concurrent_tasks(),
    )


async def activity_workers(client: Client) -> list[Worker]:
    """The workers of ``temporal-airflow-activity-worker`` (and of ``temporal-airflow worker activities``),
    after the task host has started, so that the first task does not wait for Airflow to import.

    A long-running worker imports only DAG files inside its DAG folders (:mod:`.dag_paths`) unless told
    otherwise: whoever can start a workflow on its queue must not make it run any file it can read."""
    from temporal_airflow.activities.child import warm_up
    from temporal_airflow.activities.dag_paths import CHECK_ENV

    os.environ.setdefault(CHECK_ENV, "1")  # before the task host starts: its children check
    await warm_up()
    return [create_activity_worker(client)]


def main(argv: list[str] | None = None) -> int:
    """``temporal-airflow-activity-worker [--address HOST:PORT]``: poll until interrupted."""
    args = worker_parser("temporal-airflow-activity-worker", "Run Airflow tasks for temporal-airflow.").parse_args(argv)
    return run_workers(activity_workers, args.address, "activities")
