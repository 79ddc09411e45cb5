"""``AirflowWorkflowsPlugin``: our workflows and data converter for any Temporal ``Client``/``Worker``.

In the style of ``temporalio.contrib``: a user adds the plugin to their own client (``Client.connect(...,
plugins=[AirflowWorkflowsPlugin()])``) and every worker of that client hosts the DAG-run workflows, with
Airflow's clock routed to workflow time and the shared data converter (payload store, optional
encryption). Our own ``temporal-airflow worker workflows`` is built the same way.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig

from temporal_airflow.models.converter import StorageSettings, data_converter
from temporal_airflow.workflows import clock, local_run
from temporal_airflow.workflows.deep import ExecuteAirflowDagDeepWorkflow
from temporal_airflow.workflows.pools import PoolWorkflow
from temporal_airflow.workflows.standalone import ExecuteAirflowDagWorkflow

WORKFLOWS: list[type] = [ExecuteAirflowDagWorkflow, ExecuteAirflowDagDeepWorkflow, PoolWorkflow]

log = logging.getLogger(__name__)

#: A full garbage-collector pass at least this long is logged: it holds every workflow task of the
#: process meanwhile, and past Temporal's 2 s deadlock detector it fails the one that was running.
SLOW_COLLECTION_SECONDS = 0.5


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
    """Route Airflow's clock to workflow time (idempotent) for as long as a worker or replayer runs.

    Also moves what is alive by then (Airflow's modules and registries, ~200,000 objects) out of the
    garbage collector's full passes: a full pass holds every workflow's turn, and next to a big run's own
    objects it took the better part of a second, enough on a busy machine to pass the deadlock detector.
    """
    clock.install()
    local_run.warm_up()  # Airflow's first scheduling turn in a process costs seconds: not in a workflow task
    gc.collect()
    gc.freeze()
    if _report_slow_collections not in gc.callbacks:
        gc.callbacks.append(_report_slow_collections)
    yield


_collection_started: list[float] = []


def _report_slow_collections(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks`` hook: log each full collection that took :data:`SLOW_COLLECTION_SECONDS` or more."""
    if info["generation"] != 2:
        return
    if phase == "start":
        _collection_started[:] = [time.perf_counter()]
    elif _collection_started and (took := time.perf_counter() - _collection_started[0]) >= SLOW_COLLECTION_SECONDS:
        log.warning(
            "Full garbage collection took %.2f s (%d objects tracked, %d collected): every workflow task of "
            "this worker waited",
            took,
            len(gc.get_objects(generation=2)),
            info["collected"],
        )


class AirflowWorkflowsPlugin(SimplePlugin):
    """The standalone and deep DAG-run workflows; ``storage`` defaults to the environment's settings."""

    def __init__(self, storage: StorageSettings | None = None) -> None:
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
        return config
