"""A user's own Temporal client and workers, given ``TemporalAirflowPlugin``, run DAG runs end to end: one
worker on the task queue (task tries) and one on its service queue (everything else a run needs)."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from conftest import EXAMPLES, assert_healthy, states
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.plugin import TemporalAirflowPlugin
from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult, service_task_queue

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_users_own_worker_with_the_plugin_runs_the_etl_example(temporal_server: DevServer) -> None:
    client = await Client.connect(temporal_server.address, plugins=[TemporalAirflowPlugin()])
    queue = f"plugin-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue), Worker(client, task_queue=service_task_queue(queue)):
        handle = await client.start_workflow(
            STANDALONE_WORKFLOW,
            DagExecutionInput(dag_path=str(EXAMPLES / "etl.py"), activity_task_queue=queue),
            id=f"plugin-etl-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=DagExecutionResult,
        )
        result = await handle.result()
        assert_healthy(await handle.fetch_history())
    assert result.state == "success"
    assert set(states(result).values()) == {"success"}
