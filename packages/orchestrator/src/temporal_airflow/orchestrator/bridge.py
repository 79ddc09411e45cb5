"""Starts, cancels and follows the Temporal workflows of managed DagRuns, from the scheduler process.

A background thread owns an event loop and a Temporal client. Work arrives two ways:

* fast path: the ``on_dag_run_running`` listener hands a run over right after the scheduler's
  transaction that set it running has committed;
* reconciliation, every ``reconcile_interval`` seconds, at a flat cost: one DB query for the running
  managed DagRuns and one visibility query (``list_workflows``) for the running deep workflows. Only where
  the two disagree does the pass do more, run by run, each run's error logged and the pass going on;
* between two reconciliations, every ``action_interval`` seconds (half a second), the users' actions
  alone, against the workflows the last reconciliation found (and those started since): one DB query for
  the running managed DagRuns and one for the queued task marks, so that a mark, a clear or a run marked
  success/failed reaches its workflow (and from there the try's process) within a second or so.

What a pass does:

  - a running DagRun without a running workflow gets it started (a start that failed, e.g. while
    Temporal was down, is retried; runs survive scheduler restarts) or, if its workflow has ended
    (completed, failed, terminated, timed out, cancelled from Temporal; a continued-as-new chain is
    followed by the id), the DagRun is ended: ``failed`` (or the completed workflow's own state), and none
    of its tasks is left ``running``/``queued``/``scheduled``;
  - a running workflow whose DagRun was marked success/failed, deleted, or cleared once finished, is
    cancelled; a DagRun cleared (in part) while running keeps its workflow, which is signalled to run the
    cleared tasks again and then names the new clear number in its memo;
  - task instances a user marked success/failed/skipped (queued by the listener, :mod:`.marks`) are
    signalled to their run's running workflow, which goes on from there.

Exactly once: the workflow id (:func:`workflow_id`) names the run and its clear number, and a start
rejects an id that already has an execution (closed) or joins the running one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from temporal_airflow.models import (
    DEEP_WORKFLOW,
    MARK_TASK_SIGNAL,
    RUN_CLEARED_SIGNAL,
    DagExecutionResult,
    DeepDagExecutionInput,
    RunProgress,
    TaskMark,
)
from temporal_airflow.models.converter import StorageSettings, data_converter
from temporal_airflow.orchestrator import airflow_db, marks
from temporal_airflow.orchestrator.config import TemporalSettings
from temporal_airflow.orchestrator.ids import RunRef, workflow_id
from temporal_airflow.orchestrator.prompt_start import QueuedRunWatch

__all__ = ["TemporalBridge", "workflow_id"]

log = logging.getLogger(__name__)
_FINAL = ("success", "failed")
#: Without external payload storage a conf travels inline in several payloads; Temporal warns about
#: payloads from 512 KiB and refuses them from 2 MiB.
MAX_INLINE_CONF_BYTES = 512 * 1024


#: Workflow-task timeout of the deep workflows the plugin starts (Temporal's default is 10 s).
_WORKFLOW_TASK_TIMEOUT = timedelta(minutes=1)


class TemporalBridge:
    """Owns the thread, loop and client; safe to call from the scheduler's thread."""

    def __init__(self, settings: TemporalSettings, wake_scheduler: Callable[[], None] | None = None) -> None:
        """``wake_scheduler``: cuts the scheduler's idle sleep short (:mod:`.prompt_start`)."""
        self.settings = settings
        self._wake_scheduler = wake_scheduler
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="temporal-bridge", daemon=True)
        self._client: Any = None
        self._storage = StorageSettings.from_env()
        #: The running deep workflows and the run each names, as the last reconciliation found them, with
        #: those started since (the action passes work on these).
        self._workflows: dict[str, RunRef] = {}
        #: The clear number each workflow was last told about (so a clear is signalled once).
        self._signalled_clears: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._reconcile_forever(), self._loop)
        if self._wake_scheduler is not None and self.settings.prompt_start_interval > 0:
            asyncio.run_coroutine_threadsafe(self._watch_queued_forever(self._wake_scheduler), self._loop)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(5)
        except TimeoutError:
            log.warning("Temporal bridge: work still pending at shutdown")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def hand_over(self, run: RunRef) -> Future[None]:
        """Start the run's workflow soon (never blocks the scheduler; the reconciler retries)."""
        return asyncio.run_coroutine_threadsafe(self._isolated(run, self.ensure_started(run)), self._loop)

    # -- in the bridge thread ---------------------------------------------------------------------

    async def _cancel_all(self) -> None:
        """Cancel the reconciler and hand-overs in flight, and let them unwind."""
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _get_client(self) -> Any:
        if self._client is None:
            from temporalio.client import Client

            self._client = await Client.connect(
                **self.settings.connect_kwargs(), data_converter=data_converter(self._storage)
            )
        return self._client

    async def _isolated(self, run: RunRef, work: Awaitable[None]) -> None:
        """Run one run's work; its failure is logged and concerns that run only."""
        try:
            await work
        except Exception:
            log.exception("Temporal bridge: %s failed this time (retried next pass)", run.workflow_id)

    async def ensure_started(self, run: RunRef) -> None:
        """Start the workflow of a running DagRun, or end the DagRun if its workflow already ended."""
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
        from temporalio.exceptions import WorkflowAlreadyStartedError

        size = await asyncio.to_thread(airflow_db.conf_size, run)
        if size is None:
            return  # no longer running for this clear number
        if self._storage.driver is None and size > MAX_INLINE_CONF_BYTES:
            reason = (
                f"its conf ({size} bytes) is larger than {MAX_INLINE_CONF_BYTES} bytes and external payload "
                "storage is off (TEMPORAL_AIRFLOW_PAYLOAD_STORAGE)"
            )
            await self._end(run, "failed", f"could not be started: {reason}")
            return
        client = await self._get_client()
        try:
            await client.start_workflow(
                DEEP_WORKFLOW,
                DeepDagExecutionInput(
                    dag_id=run.dag_id,
                    run_id=run.run_id,
                    activity_task_queue=self.settings.activity_task_queue,
                    task_heartbeat_timeout_seconds=self.settings.task_heartbeat_timeout,
                ),
                id=run.workflow_id,
                task_queue=self.settings.workflow_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                memo={"dag_id": run.dag_id, "run_id": run.run_id, "clear_number": run.clear_number},
                # A busy workflow worker may take more than the default 10 s to answer one workflow task
                # (its turns take milliseconds, but it shares a few cores with many runs): do not time out.
                task_timeout=_WORKFLOW_TASK_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            await self._reflect_end(run)
            return
        self._workflows[run.workflow_id] = run
        await asyncio.to_thread(airflow_db.note_run, run, self.run_note(run.workflow_id))

    def run_note(self, wid: str, ending: str = "") -> str:
        """The DagRun note that tells Airflow users where their run executes (Markdown, shown in the UI)."""
        note = f"{airflow_db.NOTE_PREFIX}: workflow `{wid}` in namespace `{self.settings.namespace}`{ending}."
        link = self.settings.workflow_ui_link(wid)
        return f"{note} [Open in the Temporal UI]({link})" if link else note

    async def _reflect_end(self, run: RunRef) -> None:
        """The run's workflow has closed while its DagRun is still running: end the DagRun likewise."""
        from temporalio.client import WorkflowExecutionStatus

        handle = (await self._get_client()).get_workflow_handle(run.workflow_id)
        status = (await handle.describe()).status
        if status == WorkflowExecutionStatus.RUNNING:
            return  # a continued-as-new chain goes on
        state = "failed"
        if status == WorkflowExecutionStatus.COMPLETED:
            state = (await handle.result(result_type=DagExecutionResult)).state
        name = status.name if status is not None else "UNKNOWN"
        await self._end(run, state, f" ended {name}, so the run was marked {state}")

    async def _end(self, run: RunRef, state: str, ending: str) -> None:
        if await asyncio.to_thread(airflow_db.end_run, run, state, self.run_note(run.workflow_id, ending)):
            log.warning("DagRun %s/%s marked %s: its workflow %s", run.dag_id, run.run_id, state, ending.strip())

    async def _reconcile_forever(self) -> None:
        """A reconciliation every ``reconcile_interval``, the users' actions every ``action_interval`` between
        (one loop: the passes never overlap)."""
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time()
        while True:
            full = loop.time() >= next_reconcile
            try:
                await (self.reconcile_once() if full else self.follow_actions_once())
            except Exception:
                log.exception("Temporal reconciliation failed; retrying")
            if full:
                next_reconcile = loop.time() + self.settings.reconcile_interval
            pause = self.settings.action_interval or self.settings.reconcile_interval
            await asyncio.sleep(max(min(pause, next_reconcile - loop.time()), 0.0))

    async def _watch_queued_forever(self, wake: Callable[[], None]) -> None:
        """Wake the scheduler whenever a managed DAG gets a new queued run (see :mod:`.prompt_start`)."""
        watch = QueuedRunWatch(self.settings)
        while True:
            pause = self.settings.prompt_start_interval
            try:
                if await asyncio.to_thread(watch.new_managed_runs):
                    wake()
            except Exception:
                log.exception("Looking for queued runs failed; trying again after the reconcile interval")
                pause = self.settings.reconcile_interval
            await asyncio.sleep(pause)

    async def reconcile_once(self) -> None:
        runs = set(await asyncio.to_thread(airflow_db.running_managed_runs))
        running = await self._running_workflows()
        self._workflows = {wid: named for wid, named in running.items() if named is not None}
        self._signalled_clears = {w: n for w, n in self._signalled_clears.items() if w in self._workflows}
        started = {(named.dag_id, named.run_id) for named in self._workflows.values()}
        for run in runs:
            if (run.dag_id, run.run_id) not in started:
                await self._isolated(run, self.ensure_started(run))
        await self._follow_actions(runs)
        await asyncio.to_thread(airflow_db.forget_deleted)

    async def follow_actions_once(self) -> None:
        """Between reconciliations: clears, run marks, deletions and task marks to the known workflows."""
        if self._workflows:
            await self._follow_actions(set(await asyncio.to_thread(airflow_db.running_managed_runs)))
        elif await asyncio.to_thread(marks.any_queued):
            await self._deliver_marks({})  # marks of runs no longer running are dropped

    async def _follow_actions(self, runs: set[RunRef]) -> None:
        """What users did to the runs of the known workflows (``runs``: the running managed DagRuns)."""
        current = {(run.dag_id, run.run_id): run for run in runs}
        for wid, named in list(self._workflows.items()):
            run = current.get((named.dag_id, named.run_id))
            if run is None or run.clear_number < named.clear_number:
                if await self._isolated_settled(named, self._cancel_if_abandoned(wid, named)):
                    self._workflows.pop(wid, None)
            elif named.clear_number < run.clear_number and self._signalled_clears.get(wid) != run.clear_number:
                await self._isolated(run, self._signal_cleared(wid, run))
                self._signalled_clears[wid] = run.clear_number
        await self._deliver_marks({(named.dag_id, named.run_id): wid for wid, named in self._workflows.items()})

    async def _isolated_settled(self, run: RunRef, work: Awaitable[bool]) -> bool:
        """:meth:`_isolated` for work that says whether it settled the run (False on an error too)."""
        try:
            return await work
        except Exception:
            log.exception("Temporal bridge: %s failed this time (retried next pass)", run.workflow_id)
            return False

    async def _deliver_marks(self, workflows: dict[tuple[str, str], str]) -> None:
        """Signal the queued task marks to their runs' running workflows (``workflows``: by dag and run id);
        drop those of runs no longer running."""
        done: list[int] = []
        for mark in await asyncio.to_thread(marks.queued_marks):
            if mark.run is not None:
                wid = workflows.get((mark.run.dag_id, mark.run.run_id))
                if wid is None:
                    continue  # its workflow is being started: next pass
                handle = (await self._get_client()).get_workflow_handle(wid)
                try:
                    await handle.signal(MARK_TASK_SIGNAL, TaskMark(mark.task_id, mark.state, mark.map_index))
                except Exception:
                    log.exception("Temporal bridge: mark of %s not delivered yet", mark.run.workflow_id)
                    continue
            done.append(mark.id)
        await asyncio.to_thread(marks.forget_marks, done)

    async def _running_workflows(self) -> dict[str, RunRef | None]:
        """Running deep workflows of this queue by id, with the run their memo names (one visibility query)."""
        client = await self._get_client()
        query = (
            f"WorkflowType = '{DEEP_WORKFLOW}' AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = '{self.settings.workflow_task_queue}'"
        )
        found: dict[str, RunRef | None] = {}
        async for execution in client.list_workflows(query):
            memo = await execution.memo()
            named = memo.get("dag_id") and memo.get("run_id")
            found[execution.id] = (
                RunRef(memo["dag_id"], memo["run_id"], int(memo.get("clear_number", 0))) if named else None
            )
        return found

    async def _signal_cleared(self, wid: str | None, run: RunRef) -> None:
        """Tasks of a running DagRun were cleared: its running workflow runs them again itself (and then
        names the new clear number in its memo), so nothing else it runs is interrupted."""
        assert wid is not None
        await (await self._get_client()).get_workflow_handle(wid).signal(RUN_CLEARED_SIGNAL, run.clear_number)

    async def _cancel_if_abandoned(self, wid: str, run: RunRef) -> bool:
        """Cancel the workflow if its DagRun was marked success/failed, deleted, or cleared (once finished)
        meanwhile; a run cleared while running keeps its workflow (:meth:`_signal_cleared`). True when
        there is nothing more to do for this workflow until the next reconciliation."""
        row = await asyncio.to_thread(airflow_db.run_row, run.dag_id, run.run_id)
        handle = (await self._get_client()).get_workflow_handle(wid)
        if row.state is None:
            reason = "deleted"
        elif row.clear_number > run.clear_number and row.state == "running":
            return False  # cleared while running: signalled, not cancelled
        elif row.clear_number > run.clear_number:
            reason = "cleared (a new execution takes over)"
        elif row.state in _FINAL:
            progress = await handle.query("progress", result_type=RunProgress)
            if progress.state in _FINAL:
                return True  # the workflow finished the run itself and is wrapping up
            reason = f"marked {row.state}"
        else:
            return False
        log.info("Cancelling Temporal workflow %s: its DagRun was %s in Airflow", wid, reason)
        await handle.cancel()
        return True
