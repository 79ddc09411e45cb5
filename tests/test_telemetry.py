"""The SDK's worker metrics, exported by configuration: a worker command's Prometheus endpoint, scraped.

A real worker process (``temporal-airflow worker all``) with ``TEMPORAL_AIRFLOW_PROMETHEUS_BIND`` runs a
DAG on the session's dev server; its ``/metrics`` then carries what operators alert on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from conftest import EXAMPLES
from temporal_airflow.cli.listeners import candidate_port, listens_on
from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
from temporal_airflow.models.telemetry import PROMETHEUS_ENV, prometheus_address

pytestmark = pytest.mark.integration

#: What an operator's dashboard needs from a worker (names as the SDK's Prometheus exporter writes them).
EXPECTED = (
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_activity_schedule_to_start_latency",
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    "temporal_workflow_completed",
)


def test_a_bare_port_binds_loopback_only() -> None:
    assert prometheus_address("9464") == "127.0.0.1:9464"
    assert prometheus_address("0.0.0.0:9464") == "0.0.0.0:9464"
    with pytest.raises(ValueError, match=PROMETHEUS_ENV):
        prometheus_address("nine")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_a_worker_exports_schedule_to_start_and_slot_metrics(client: Client, tmp_path: Path) -> None:
    port = candidate_port()
    suffix = uuid.uuid4().hex[:8]
    workflows, activities = f"metrics-wf-{suffix}", f"metrics-{suffix}"
    queues = {"TEMPORAL_WORKFLOW_TASK_QUEUE": workflows, "TEMPORAL_ACTIVITY_TASK_QUEUE": activities}
    env = {
        **os.environ,
        **queues,
        PROMETHEUS_ENV: str(port),
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_AIRFLOW_DAG_FOLDERS": str(EXAMPLES),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "temporal-airflow"), "worker", "all"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 120
        while not listens_on(worker.pid, port):
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
        result = await client.execute_workflow(
            STANDALONE_WORKFLOW,
            DagExecutionInput(
                dag_path=str(EXAMPLES / "etl.py"), activity_task_queue=queues["TEMPORAL_ACTIVITY_TASK_QUEUE"]
            ),
            id=f"metrics-{suffix}",
            task_queue=queues["TEMPORAL_WORKFLOW_TASK_QUEUE"],
            result_type=DagExecutionResult,
        )
        assert result.state == "success"
        metrics = _scrape(f"http://127.0.0.1:{port}/metrics")
        for name in EXPECTED:
            assert name in metrics, name
        assert f'task_queue="{activities}"' in metrics
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
