"""How every temporal-airflow process connects to Temporal, which task queues it uses, and how a worker runs.

The workflow worker and the activity worker are installed apart and do not depend on each other, yet
they must agree on these settings and behave alike as commands; the CLI starts both. So the settings
and the run loop live here, next to the wire contract, with ``temporalio`` only (no Airflow import).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from temporal_airflow.models import DEFAULT_ACTIVITY_TASK_QUEUE, DEFAULT_WORKFLOW_TASK_QUEUE
from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion
from temporal_airflow.models.converter import data_converter
from temporal_airflow.models.telemetry import metrics_runtime

#: Makes the workers of one kind (``workflows``, ``activities`` or both) for a connected client.
WorkerFactory = Callable[[Client], Awaitable[list[Worker]]]


def workflow_task_queue() -> str:
    """``TEMPORAL_WORKFLOW_TASK_QUEUE`` or the default."""
    return os.environ.get("TEMPORAL_WORKFLOW_TASK_QUEUE", DEFAULT_WORKFLOW_TASK_QUEUE)


def activity_task_queue() -> str:
    """``TEMPORAL_ACTIVITY_TASK_QUEUE`` or the default."""
    return os.environ.get("TEMPORAL_ACTIVITY_TASK_QUEUE", DEFAULT_ACTIVITY_TASK_QUEUE)


async def connect_client(address: str | None = None) -> Client:
    """Connect with the SDK's envconfig: ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``,
    ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` (and ``TEMPORAL_PROFILE`` / config file); the SDK's metrics
    exported as :mod:`temporal_airflow.models.telemetry` is configured."""
    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=data_converter(), runtime=metrics_runtime())


def quiet_airflow_logs() -> None:
    """Defaults for a worker or ``run`` process, set before Airflow is imported (the user's settings win).

    Scheduler chatter from a workflow worker would drown everything else; the task logs (in their own
    files) keep their level through ``TEMPORAL_AIRFLOW_TASK_LOG_LEVEL``. Airflow's example plugins (an
    event listener that prints) have no business in a worker.
    """
    os.environ.setdefault("TEMPORAL_AIRFLOW_TASK_LOG_LEVEL", os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def worker_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments of a worker command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS, else localhost:7233)")
    return parser


def run_workers(
    create: WorkerFactory, address: str | None, kind: str, preflight: Callable[[], object] | None = None
) -> int:
    """Connect, then poll with the workers ``create`` makes until interrupted (Ctrl-C exits 0).

    ``preflight`` (the package's Airflow version check) runs first, before anything connects. Anything that
    stops the workers (an unsupported Airflow, an unreachable server, a worker that fails) ends the command
    with one line on stderr: exit 2 for an unsupported Airflow, 1 otherwise.
    """
    quiet_airflow_logs()

    async def serve() -> None:
        if preflight is not None:
            preflight()
        client = await connect_client(address)
        workers = await create(client)
        print(f"temporal-airflow {kind} worker(s) polling {client.service_client.config.target_host}", flush=True)
        await asyncio.gather(*(worker.run() for worker in workers))

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    except UnsupportedAirflowVersion as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        print(f"error: temporal-airflow {kind} worker(s) stopped: {type(error).__name__}: {first}", file=sys.stderr)
        return 1
    return 0
