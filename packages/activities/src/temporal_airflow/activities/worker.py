"""The activity worker: Airflow tasks (each try in its own process), deferred tasks' triggers, DAG
parsing and DB sync, as two Temporal workers in one process: task tries on the activity task queue, a
few at a time, and the rest on its service queue (:func:`service_task_queue`), many at a time.

``temporal-airflow-activity-worker`` runs it, next to the DAG files. Airflow is imported only once a
worker is made, so that the command's defaults (:func:`temporal_airflow.models.runtime.quiet_airflow_logs`)
come first.
"""

from __future__ import annotations

import os

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.models import service_task_queue
from temporal_airflow.models.converter import StorageSettings
from temporal_airflow.models.runtime import activity_task_queue, run_workers, worker_parser


def create_activity_worker(client: Client, task_queue: str | None = None, max_concurrent: int | None = None) -> Worker:
    """The worker of task tries: never more at once (each is a process) than ``max_concurrent``.

    Large XCom values go to the payload store of the client's converter.
    """
    from temporal_airflow.activities.plugin import max_concurrent_tasks

    return _worker(client, task_queue or activity_task_queue(), max_concurrent or max_concurrent_tasks())


def create_service_worker(client: Client, task_queue: str | None = None, max_concurrent: int | None = None) -> Worker:
    """The worker of everything else a run needs (DB sync, pool slots, triggers, DAG parsing, callbacks),
    on :func:`service_task_queue` of the same queue: long task tries never take these slots."""
    from temporal_airflow.activities.plugin import max_concurrent_service_activities

    queue = service_task_queue(task_queue or activity_task_queue())
    return _worker(client, queue, max_concurrent or max_concurrent_service_activities())


def _worker(client: Client, task_queue: str, max_concurrent: int) -> Worker:
    """A worker with every activity (only its queue's come to it); the blocking DB-sync activities run
    on the plugin's thread pool."""
    from temporal_airflow.activities.plugin import AirflowActivitiesPlugin

    external = client.data_converter.external_storage
    storage = StorageSettings(driver=external.drivers[0] if external else None)
    return Worker(
        client,
        task_queue=task_queue,
        plugins=[AirflowActivitiesPlugin(storage)],
        max_concurrent_activities=max_concurrent,
    )


async def activity_workers(client: Client) -> list[Worker]:
    """The workers of ``temporal-airflow-activity-worker`` (and of ``temporal-airflow worker activities``),
    after the task host has started, so that the first task does not wait for Airflow to import.

    A long-running worker imports only DAG files inside its DAG folders (:mod:`.dag_paths`) unless told
    otherwise: whoever can start a workflow on its queue must not make it run any file it can read."""
    from temporal_airflow.activities.airflow_compat import check
    from temporal_airflow.activities.dag_paths import CHECK_ENV
    from temporal_airflow.activities.task_host_client import warm_up

    check()  # before the task host starts: an unsupported Airflow fails here, in one line
    os.environ.setdefault(CHECK_ENV, "1")  # before the task host starts: its children check
    await warm_up()
    return [create_activity_worker(client), create_service_worker(client)]


def main(argv: list[str] | None = None) -> int:
    """``temporal-airflow-activity-worker [--address HOST:PORT]``: poll until interrupted."""
    args = worker_parser("temporal-airflow-activity-worker", "Run Airflow tasks for temporal-airflow.").parse_args(argv)
    from temporal_airflow.activities.airflow_compat import check

    return run_workers(activity_workers, args.address, "activities", preflight=check)
