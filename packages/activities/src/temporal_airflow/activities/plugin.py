"""``AirflowActivitiesPlugin``: our activities and data converter for any Temporal ``Client``/``Worker``.

In the style of ``temporalio.contrib``: what an activity worker next to the DAG files needs, with the
shared data converter. The DB-sync activities are blocking: the plugin gives the worker a thread pool
for them unless it has one. ``temporal-airflow-activity-worker`` uses the same plugin; the plugin for
workflows and activities in one worker is ``temporal_airflow.cli.plugin.TemporalAirflowPlugin``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.converter import PayloadCodec
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig

from temporal_airflow.activities import airflow_compat
from temporal_airflow.activities.callback_activities import CALLBACK_ACTIVITIES
from temporal_airflow.activities.deep_db_sync_activities import SYNC_ACTIVITIES
from temporal_airflow.activities.pool_activities import POOL_ACTIVITIES
from temporal_airflow.activities.standalone_pool_activities import STANDALONE_POOL_ACTIVITIES
from temporal_airflow.activities.task_activities import TaskActivities
from temporal_airflow.activities.task_host_client import HEARTBEAT_EVERY
from temporal_airflow.activities.trigger_activities import TRIGGER_ACTIVITIES
from temporal_airflow.models.converter import StorageSettings, data_converter


def max_concurrent_tasks() -> int:
    """``TEMPORAL_AIRFLOW_MAX_CONCURRENT_TASKS``, default: number of CPUs (each task is a process)."""
    return int(os.environ.get("TEMPORAL_AIRFLOW_MAX_CONCURRENT_TASKS", os.cpu_count() or 2))


def max_concurrent_service_activities() -> int:
    """``TEMPORAL_AIRFLOW_MAX_CONCURRENT_SERVICE_ACTIVITIES``, default 32: DB syncs, pool-slot waits,
    triggers (each a process while it waits), DAG parsing and callbacks at once, per worker."""
    return int(os.environ.get("TEMPORAL_AIRFLOW_MAX_CONCURRENT_SERVICE_ACTIVITIES", 32))


def airflow_activities(storage: StorageSettings, codec: PayloadCodec | None = None) -> list[Callable[..., Any]]:
    """Every activity; large XCom values go to ``storage``'s payload store through ``codec`` (the data
    converter's, so with an encryption key they are stored encrypted)."""
    return [
        *TaskActivities(storage.driver, codec).activities(),
        *TRIGGER_ACTIVITIES,
        *SYNC_ACTIVITIES,
        *POOL_ACTIVITIES,
        *STANDALONE_POOL_ACTIVITIES,
        *CALLBACK_ACTIVITIES,
    ]


class AirflowActivitiesPlugin(SimplePlugin):
    """Task tries, triggers, DAG parsing and the deep-mode DB sync."""

    def __init__(self, storage: StorageSettings | None = None, name: str = "temporal-airflow.activities") -> None:
        airflow_compat.check()  # an unsupported Airflow fails here, with one line, not in a try
        storage = storage or StorageSettings.from_env()
        converter = data_converter(storage)
        super().__init__(
            name, data_converter=converter, activities=airflow_activities(storage, converter.payload_codec)
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        if config.get("activity_executor") is None:
            limit = config.get("max_concurrent_activities") or max_concurrent_tasks()
            config["activity_executor"] = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="airflow-sync")
        # The SDK batches heartbeats up to 80% of the heartbeat timeout (48 s for 60 s): cancellations would
        # wait that long. One small RPC per running try per second keeps them within a second or two.
        config["max_heartbeat_throttle_interval"] = HEARTBEAT_EVERY
        config["default_heartbeat_throttle_interval"] = HEARTBEAT_EVERY
        return config
