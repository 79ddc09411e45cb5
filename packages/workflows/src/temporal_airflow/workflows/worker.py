"""The workflow worker: hosts the DAG-run workflows (deterministic scheduling, no task code).

``temporal-airflow-workflow-worker`` runs it. Airflow is imported only once a worker is made, so that
the command's defaults (:func:`temporal_airflow.models.runtime.quiet_airflow_logs`) come first.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.models.runtime import run_workers, worker_parser, workflow_task_queue


def create_workflow_worker(client: Client, task_queue: str | None = None) -> Worker:
    """A worker for the DAG-run workflows (the plugin opens the door to Airflow when the worker starts)."""
    from temporal_airflow.workflows import airflow_compat

    airflow_compat.check_version()  # before importing Airflow's internals: an unsupported one fails in one line
    from temporal_airflow.workflows.plugin import AirflowWorkflowsPlugin

    return Worker(client, task_queue=task_queue or workflow_task_queue(), plugins=[AirflowWorkflowsPlugin()])


async def workflow_workers(client: Client) -> list[Worker]:
    """The workers of ``temporal-airflow-workflow-worker`` (and of ``temporal-airflow worker workflows``)."""
    return [create_workflow_worker(client)]


def main(argv: list[str] | None = None) -> int:
    """``temporal-airflow-workflow-worker [--address HOST:PORT]``: poll until interrupted."""
    args = worker_parser("temporal-airflow-workflow-worker", "Run temporal-airflow's DAG-run workflows.").parse_args(
        argv
    )
    from temporal_airflow.workflows.airflow_compat import check_version

    return run_workers(workflow_workers, args.address, "workflows", preflight=check_version)
