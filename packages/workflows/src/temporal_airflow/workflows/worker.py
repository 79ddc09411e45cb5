"""The workflow worker: hosts the DAG-run workflows (deterministic scheduling, no task code)."""

from __future__ import annotations

import os

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from temporal_airflow.models import DEFAULT_ACTIVITY_TASK_QUEUE, DEFAULT_WORKFLOW_TASK_QUEUE
from temporal_airflow.models.converter import data_converter
from temporal_airflow.workflows.plugin import WORKFLOWS, AirflowWorkflowsPlugin

__all__ = ["WORKFLOWS", "activity_task_queue", "connect_client", "create_workflow_worker", "workflow_task_queue"]


def workflow_task_queue() -> str:
    """``TEMPORAL_WORKFLOW_TASK_QUEUE`` or the default."""
    return os.environ.get("TEMPORAL_WORKFLOW_TASK_QUEUE", DEFAULT_WORKFLOW_TASK_QUEUE)


def activity_task_queue() -> str:
    """``TEMPORAL_ACTIVITY_TASK_QUEUE`` or the default."""
    return os.environ.get("TEMPORAL_ACTIVITY_TASK_QUEUE", DEFAULT_ACTIVITY_TASK_QUEUE)


async def connect_client(address: str | None = None) -> Client:
    """Connect with the SDK's envconfig: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
    ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` (and ``TEMPORAL_PROFILE`` / config file)."""
    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=data_converter())


def create_workflow_worker(client: Client, task_queue: str | None = None) -> Worker:
    """A worker for the DAG-run workflows (the plugin installs the workflow-time seam in Airflow)."""
    return Worker(client, task_queue=task_queue or workflow_task_queue(), plugins=[AirflowWorkflowsPlugin()])
