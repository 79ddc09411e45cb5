"""Helpers for the e2e tests: the deployment as its users reach it, polling, screenshots."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from playwright.sync_api import Page
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from e2e_stack import ROOT, Endpoints, Stack
from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.models.converter import data_converter
from temporal_airflow.orchestrator.bridge import workflow_id

ARTIFACTS = ROOT / ".artifacts" / "e2e"
CHROMIUM = os.environ.get("TEMPORAL_AIRFLOW_E2E_CHROMIUM", "/usr/bin/chromium")
# As root on a machine with a closed network: no sandbox, and no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
E2E_DAG_IDS = {"e2e_pipeline", "e2e_failing", "e2e_connection", "e2e_scheduled", "e2e_long"}

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Deployment:
    """The running stack as its users reach it: Airflow's REST API and UI, and Temporal."""

    endpoints: Endpoints
    stack: Stack
    api: AirflowRest

    @property
    def ui_url(self) -> str:
        return self.endpoints.api_url

    def workflow_status(self, dag_id: str, run_id: str) -> WorkflowExecutionStatus | None:
        """Status of the run's workflow (``workflow_id(dag_id, run_id)``); ``None`` when there is none."""

        async def describe(client: Client) -> WorkflowExecutionStatus | None:
            try:
                return (await client.get_workflow_handle(workflow_id(dag_id, run_id)).describe()).status
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    return None
                raise

        return self._with_temporal(describe)

    def workflow_executions(self, dag_id: str, run_id: str) -> int:
        """How many workflow executions (first runs and retries/continuations alike) the run has had."""

        async def count(client: Client) -> int:
            query = f"WorkflowId = '{workflow_id(dag_id, run_id)}'"
            return len([execution async for execution in client.list_workflows(query)])

        return self._with_temporal(count)

    def workflow_history_json(self, dag_id: str, run_id: str) -> str:
        async def fetch(client: Client) -> str:
            return (await client.get_workflow_handle(workflow_id(dag_id, run_id)).fetch_history()).to_json()

        return self._with_temporal(fetch)

    def _with_temporal(self, call: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``call`` with a Temporal client on a thread of its own (Playwright's sync API owns this one)."""

        async def connected() -> T:
            client = await Client.connect(
                self.endpoints.temporal_address, namespace=self.endpoints.namespace, data_converter=data_converter()
            )
            return await call(client)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, connected()).result()

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api.run(dag_id, run_id)["state"])

    def wait_for_run_state(self, dag_id: str, run_id: str, states: set[str], timeout: float = 180) -> str:
        return eventually(
            lambda: state if (state := self.run_state(dag_id, run_id)) in states else None,
            timeout,
            f"{dag_id} run {run_id} to reach {sorted(states)}",
        )


def screenshot(page: Page, name: str) -> Path:
    """Save the page as ``.artifacts/e2e/{name}.png`` and return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{safe_name(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
