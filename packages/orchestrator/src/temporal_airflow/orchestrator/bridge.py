"""Starts and cancels the Temporal workflows of managed DagRuns, from the scheduler process.

A background thread owns an event loop and a Temporal client. Work arrives two ways:

* fast path: the ``on_dag_run_running`` listener hands a run over right after the scheduler's
  transaction that set it running has committed;
* reconciliation (every ``reconcile_interval`` seconds): every managed DagRun that is ``running`` in
  Airflow's DB must have a running workflow (so a start that failed, e.g. Temporal down, is retried
  until it succeeds, and runs survive scheduler restarts); every running workflow whose DagRun was
  marked success/failed or deleted in Airflow is cancelled.

Exactly once: the workflow id is ``airflow-{dag_id}-{run_id}``, so Temporal refuses a second start
from another attempt or another scheduler. A cleared run (Airflow bumps ``clear_number``) gets a new
execution under the same id; the clear number is kept in the workflow's memo.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from temporal_airflow.models import DEEP_WORKFLOW, DeepDagExecutionInput, RunProgress
from temporal_airflow.models.converter import data_converter
from temporal_airflow.orchestrator.config import TemporalSettings
from temporal_airflow.orchestrator.managed import ManagedDags

log = logging.getLogger(__name__)
_FINAL = ("success", "failed")


def workflow_id(dag_id: str, run_id: str) -> str:
    """The workflow id of a DagRun: one workflow per run."""
    return f"airflow-{dag_id}-{run_id}"


class TemporalBridge:
    """Owns the thread, loop and client; safe to call from the scheduler's thread."""

    def __init__(self, settings: TemporalSettings, managed: ManagedDags) -> None:
        self.settings = settings
        self.managed = managed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="temporal-bridge", daemon=True)
        self._client: Any = None
        self._reconciler: Future[None] | None = None

    def start(self) -> None:
        self._thread.start()
        self._reconciler = asyncio.run_coroutine_threadsafe(self._reconcile_forever(), self._loop)

    def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def hand_over(self, dag_id: str, run_id: str) -> Future[None]:
        """Start the run's workflow soon (never blocks the scheduler)."""
        return asyncio.run_coroutine_threadsafe(self._ensure_started_logged(dag_id, run_id), self._loop)

    def reconcile_now(self) -> None:
        asyncio.run_coroutine_threadsafe(self.reconcile_once(), self._loop).result(60)

    # -- in the bridge thread ---------------------------------------------------------------------

    async def _get_client(self) -> Any:
        if self._client is None:
            from temporalio.client import Client

            self._client = await Client.connect(**self.settings.connect_kwargs(), data_converter=data_converter())
        return self._client

    async def _ensure_started_logged(self, dag_id: str, run_id: str) -> None:
        try:
            await self.ensure_started(dag_id, run_id)
        except Exception:  # the reconciler retries
            log.exception("Could not start the Temporal workflow of %s/%s yet", dag_id, run_id)

    async def ensure_started(self, dag_id: str, run_id: str) -> None:
        """Start the workflow of a running DagRun unless its execution for this clear number exists."""
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError
        from temporalio.service import RPCError, RPCStatusCode

        state, clear_number = await asyncio.to_thread(_run_state, dag_id, run_id)
        if state != "running":
            return
        client = await self._get_client()
        wid = workflow_id(dag_id, run_id)
        try:
            description = await client.get_workflow_handle(wid).describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return
            if int(await description.memo_value("clear_number", 0)) >= clear_number:
                return
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            await client.start_workflow(
                DEEP_WORKFLOW,
                DeepDagExecutionInput(
                    dag_id=dag_id, run_id=run_id, activity_task_queue=self.settings.activity_task_queue
                ),
                id=wid,
                task_queue=self.settings.workflow_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={"dag_id": dag_id, "run_id": run_id, "clear_number": clear_number},
            )
            log.info("Started Temporal workflow %s", wid)
        except WorkflowAlreadyStartedError:
            return
        await asyncio.to_thread(_note_temporal_run, dag_id, run_id, self.run_note(wid))

    def run_note(self, wid: str) -> str:
        """The DagRun note that tells Airflow users where their run executes (Markdown, shown in the UI)."""
        note = f"Runs on Temporal: workflow `{wid}` in namespace `{self.settings.namespace}`."
        link = self.settings.workflow_ui_link(wid)
        return f"{note} [Open in the Temporal UI]({link})" if link else note

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("Temporal reconciliation failed; retrying")
            await asyncio.sleep(self.settings.reconcile_interval)

    async def reconcile_once(self) -> None:
        for dag_id, run_id in await asyncio.to_thread(self._running_managed_runs):
            await self.ensure_started(dag_id, run_id)
        await self._cancel_abandoned()

    def _running_managed_runs(self) -> list[tuple[str, str]]:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(select(DagRun.dag_id, DagRun.run_id).where(DagRun.state == DagRunState.RUNNING))
            return [(d, r) for d, r in rows if self.managed.is_managed(d)]

    async def _cancel_abandoned(self) -> None:
        """Cancel workflows whose DagRun was marked success/failed, deleted, or cleared meanwhile."""
        client = await self._get_client()
        query = (
            f"WorkflowType = '{DEEP_WORKFLOW}' AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = '{self.settings.workflow_task_queue}'"
        )
        async for execution in client.list_workflows(query):
            memo = await execution.memo()
            dag_id, run_id = memo.get("dag_id"), memo.get("run_id")
            if not dag_id or not run_id:
                continue
            state, clear_number = await asyncio.to_thread(_run_state, dag_id, run_id)
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            if state is None:
                reason = "deleted"
            elif clear_number > int(memo.get("clear_number", 0)):
                reason = "cleared (a new execution takes over)"
            elif state in _FINAL:
                progress = await handle.query("progress", result_type=RunProgress)
                if progress.state in _FINAL:
                    continue  # the workflow finished the run itself and is wrapping up
                reason = f"marked {state}"
            else:
                continue
            log.info("Cancelling Temporal workflow %s: its DagRun was %s in Airflow", execution.id, reason)
            await handle.cancel()


def _note_temporal_run(dag_id: str, run_id: str, note: str) -> None:
    """Set the DagRun's note, unless its user already wrote one (the trigger API and UI take a note)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is not None and not run.note:
            run.note = note


def _run_state(dag_id: str, run_id: str) -> tuple[str | None, int]:
    """The DagRun's state and clear number in Airflow's DB (``None`` if it does not exist)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(DagRun.state, DagRun.clear_number).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
    if row is None:
        return None, 0
    return (None if row[0] is None else str(row[0])), int(row[1] or 0)
