"""The activity worker command as a process: SIGKILL it in the middle of a task and a new worker picks the
run up and finishes it; by default it imports DAG files only from its DAG folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from conftest import ROOT, TEST_DAGS, DagRunner, Queues, assert_healthy, record_history
from temporal_airflow.activities.dag_paths import DAG_OUTSIDE_FOLDERS_ERROR
from temporal_airflow.cli.dev_server import DevServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _start_activity_worker(server: DevServer, queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TEMPORAL_ADDRESS=server.address,
        TEMPORAL_ACTIVITY_TASK_QUEUE=queue,
        AIRFLOW__CORE__DAGS_FOLDER=str(TEST_DAGS),  # a worker only imports DAG files from its DAG folder
    )
    cli = Path(sys.executable).parent / "temporal-airflow"
    return subprocess.Popen(
        [str(cli), "worker", "activities"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_run_survives_sigkill_of_activity_worker(
    client: Client, temporal_server: DevServer, queues: Queues, workflow_worker: None
) -> None:
    queue = f"{queues.activities}-crash"
    runner = DagRunner(client, queues)
    runner.queues = Queues()
    runner.queues.workflows, runner.queues.activities = queues.workflows, queue
    marker = Path(tempfile.mktemp(prefix="crash-probe-"))
    log = Path(tempfile.mktemp(prefix="crash-worker-", suffix=".log"))
    first = _start_activity_worker(temporal_server, queue, log)
    second = None
    try:
        handle = await runner.start(
            TEST_DAGS / "crash_probe.py",
            conf={"marker": str(marker), "seconds": 8},
            task_heartbeat_timeout_seconds=3,
        )
        await _wait_for(lambda: marker.exists() and "start" in marker.read_text(), 120, "the task to start")
        os.kill(first.pid, signal.SIGKILL)  # the worker only: its task processes must die with it
        first.wait()
        second = _start_activity_worker(temporal_server, queue, log)
        result = await asyncio.wait_for(handle.result(), timeout=180)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    assert result.state == "success", log.read_text()[-3000:]
    values = {t.task_id: json.loads(t.xcoms[0].value_json) for t in result.tasks}
    assert values == {"long_step": "survived", "after": "survived and continued"}
    lines = marker.read_text().split("\n")
    starts = [line for line in lines if line.startswith("start")]
    ends = [line for line in lines if line.startswith("end")]
    # The killed try never finished (its process died with the worker); the new worker ran it once, to
    # the end, even though the task outlived the 3 s heartbeat timeout.
    assert len(starts) == 2 and len(ends) == 1
    assert ends[0].split()[1] == starts[1].split()[1]
    # Same Airflow try: a lost worker is not a task failure.
    assert next(t for t in result.tasks if t.task_id == "long_step").try_number == 1
    history = await handle.fetch_history()
    assert_healthy(history)
    record_history("lost_worker", history)


async def test_a_worker_refuses_dag_files_outside_its_dag_folder(
    client: Client, temporal_server: DevServer, queues: Queues, workflow_worker: None
) -> None:
    """No setting needed: whoever can start a workflow must not make a worker import any file it can read."""
    queue = f"{queues.activities}-folders"
    runner = DagRunner(client, queues)
    runner.queues = Queues()
    runner.queues.workflows, runner.queues.activities = queues.workflows, queue
    log = Path(tempfile.mktemp(prefix="folder-worker-", suffix=".log"))
    worker = _start_activity_worker(temporal_server, queue, log)
    try:
        handle = await runner.start(ROOT / "examples" / "dags" / "etl.py")
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), timeout=180)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    assert DAG_OUTSIDE_FOLDERS_ERROR in str(failure.value.cause), failure.value.cause
    assert_healthy(await handle.fetch_history())
