"""``temporal-airflow worker [workflows|activities|all]``: the worker packages' own workers, or both.

The same workers as ``temporal-airflow-workflow-worker`` and ``temporal-airflow-activity-worker``
(installed with their packages alone); this command runs either or both in one process.
"""

from __future__ import annotations

import argparse

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.activities.worker import activity_workers
from temporal_airflow.models.runtime import WorkerFactory, run_workers
from temporal_airflow.workflows.worker import workflow_workers


async def _all_workers(client: Client) -> list[Worker]:
    return [*await workflow_workers(client), *await activity_workers(client)]


#: ``temporal-airflow worker KIND``: the same workers as the worker packages' own commands, or both.
WORKERS: dict[str, WorkerFactory] = {"workflows": workflow_workers, "activities": activity_workers, "all": _all_workers}


def worker(args: argparse.Namespace) -> int:
    """The ``worker`` command."""
    return run_workers(WORKERS[args.kind], args.address, args.kind)
