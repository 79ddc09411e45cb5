"""``AirflowWorkflowsPlugin``: our workflows and data converter for any Temporal ``Client``/``Worker``.

In the style of ``temporalio.contrib``: a user adds the plugin to their own client (``Client.connect(...,
plugins=[AirflowWorkflowsPlugin()])``) and every worker of that client hosts the DAG-run workflows, with
Airflow's clock routed to workflow time and the shared data converter (payload store, optional
encryption). Our own ``temporal-airflow worker workflows`` is built the same way.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker, WorkerConfig

from temporal_airflow.models.converter import StorageSettings, data_converter
from temporal_airflow.workflows import airflow_compat, collector, local_run
from temporal_airflow.workflows.deep import ExecuteAirflowDagDeepWorkflow
from temporal_airflow.workflows.pools import PoolWorkflow
from temporal_airflow.workflows.standalone import ExecuteAirflowDagWorkflow

WORKFLOWS: list[type] = [ExecuteAirflowDagWorkflow, ExecuteAirflowDagDeepWorkflow, PoolWorkflow]


def max_concurrent_workflow_tasks() -> int:
    """``TEMPORAL_AIRFLOW_MAX_CONCURRENT_WORKFLOW_TASKS``, default: number of CPUs (at least 2).

    A workflow task runs Airflow's scheduling code under the GIL: taking more at once than there are
    cores only makes each one slower (the SDK's default is 100), until the slowest overruns its
    workflow-task timeout or the deadlock detector. Tasks not taken yet wait safely on the server.
    """
    return int(os.environ.get("TEMPORAL_AIRFLOW_MAX_CONCURRENT_WORKFLOW_TASKS") or max(2, os.cpu_count() or 2))


#: The SDK's default, and ours, for how long a run's next workflow task waits for the worker that has the
#: run in its cache before any worker may take it.
_SDK_STICKY_TIMEOUT = timedelta(seconds=10)
STICKY_TIMEOUT = timedelta(seconds=30)


@asynccontextmanager
async def airflow_clock() -> AsyncIterator[None]:
    """Open the package's door to Airflow (:func:`airflow_compat.install`: the version check, Airflow's
    clock routed to workflow time, the run patches; idempotent) for as long as a worker or replayer runs.

    Also moves what is alive by then (Airflow's modules and registries, ~200,000 objects) out of the
    garbage collector's full passes: a full pass holds every workflow's turn, and next to a big run's own
    objects it took the better part of a second, enough on a busy machine to pass the deadlock detector.
    """
    airflow_compat.install()  # refuses an unsupported Airflow: the worker stops at start, with one line
    local_run.warm_up()  # Airflow's first scheduling turn in a process costs seconds: not in a workflow task
    gc.collect()
    gc.freeze()
    yield


class AirflowWorkflowsPlugin(SimplePlugin):
    """The standalone and deep DAG-run workflows; ``storage`` defaults to the environment's settings."""

    def __init__(self, storage: StorageSettings | None = None) -> None:
        airflow_compat.check_version()  # an unsupported Airflow fails here, with one line, not in a run
        super().__init__(
            "temporal-airflow.workflows",
            data_converter=data_converter(storage),
            workflows=WORKFLOWS,
            run_context=airflow_clock,
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        if config.get("max_concurrent_workflow_tasks") is None and config.get("tuner") is None:
            config["max_concurrent_workflow_tasks"] = max_concurrent_workflow_tasks()
        if config.get("sticky_queue_schedule_to_start_timeout") == _SDK_STICKY_TIMEOUT:
            # With few workflow tasks at once, a busy worker's next task for a run may wait its turn on the
            # worker's own queue: wait longer before handing it elsewhere (a dead worker's runs move on
            # after this too).
            config["sticky_queue_schedule_to_start_timeout"] = STICKY_TIMEOUT
        if config.get("workflow_task_executor") is None:
            # The SDK's own default, counted: full garbage collections wait for a moment with none in flight.
            config["workflow_task_executor"] = collector.CountingExecutor(
                max_workers=config.get("max_concurrent_workflow_tasks") or 500, thread_name_prefix="workflow_task"
            )
        return config

    async def run_worker(self, worker: Worker, next: Callable[[Worker], Awaitable[None]]) -> None:
        executor = worker.config().get("workflow_task_executor")
        try:
            async with collector.collections_between_tasks():
                await super().run_worker(worker, next)
        finally:
            if isinstance(executor, collector.CountingExecutor):
                executor.shutdown(wait=False)  # the SDK shuts down only the pool it made itself
