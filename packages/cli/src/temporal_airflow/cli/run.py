"""``temporal-airflow run DAG_FILE``: one DAG run as a Temporal workflow, waited for, with live progress.

With no Temporal address it starts everything itself: an embedded dev server and in-process workers.
A cold start is mostly waiting (the server to serve, Airflow to import in the task host and here), so
these start at once, side by side: the server's process and the task host's are launched first, and
the workflows' Airflow code warms up in a thread meanwhile.

It ends with the run's outcome (exit 0 on success, 1 otherwise), with one clear line for anything that
stops it early (an unreachable server, a worker that died: never a silent hang), or on the first Ctrl-C
or SIGTERM (130/143), always after stopping its workers, their task processes and the embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from temporal_airflow.cli.dev_server import DevServer, environ_address
from temporal_airflow.cli.parser import RunRequest
from temporal_airflow.cli.processes import ShutdownSignals, sigint_ignored
from temporal_airflow.cli.run_output import ProgressPrinter, RunFailed, Streams, report, report_error, route_output

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle
    from temporalio.worker import Worker


class WorkerStopped(RuntimeError):
    """An in-process worker of ``run`` ended (or failed) while the run was still going."""


def run(args: argparse.Namespace) -> int:
    """The ``run`` command."""
    request = RunRequest.of(args)
    address = args.address or environ_address()
    server = DevServer(ui=True) if address is None else None
    streams, log_path = route_output(args.output, args.verbose)
    if server is not None:
        server.launch()  # first of all: it starts while Temporal's SDK and Airflow import here
    from temporal_airflow.models.runtime import quiet_airflow_logs

    quiet_airflow_logs()
    if log_path is not None:
        print(f"Airflow's own output goes to {log_path}", file=streams.info, flush=True)
    try:
        return asyncio.run(_interruptible(_run(args, request, streams, address, server), streams.info))
    except KeyboardInterrupt:  # before the handlers are installed
        return 130
    except Exception as error:
        report_error(error, args.output, streams, log_path)
        for stream in (streams.out, streams.err, sys.stdout, sys.stderr):
            stream.flush()
        # Everything `run` started is stopped by now; a failed connection can leave a thread of the SDK's
        # core runtime that aborts the interpreter's finalization (SIGABRT), so the exit code would lie.
        os._exit(1)
    finally:
        for stream in (streams.out, streams.err):
            stream.flush()


async def _interruptible(run: Coroutine[Any, Any, int], info: TextIO) -> int:
    """Await ``run``; the first SIGINT or SIGTERM cancels it (its cleanup runs), exit code 128 + signal."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signals = ShutdownSignals(task.cancel, info).install_on(loop)
    try:
        return await run
    except asyncio.CancelledError:
        if not signals.received:
            raise
        print("Stopped.", file=info, flush=True)
        return 128 + signals.received


async def _run(
    args: argparse.Namespace, request: RunRequest, streams: Streams, address: str | None, server: DevServer | None
) -> int:
    local = server is not None or args.local_workers
    queues = RunQueues.private() if args.local_workers and server is None else RunQueues.configured()
    # Launched first, side by side: the server's process, the task host's, the workflows' warm-up.
    starting = asyncio.ensure_future(server.start_async()) if server is not None else None
    warming = asyncio.ensure_future(_warm_up()) if local else None
    running: dict[asyncio.Future[None], Worker] = {}
    try:
        if server is not None and starting is not None:
            await starting
            address = server.address
            print(f"Started embedded Temporal dev server at {address}", file=streams.info, flush=True)
        assert address is not None
        client = await _connect(address, embedded=server is not None)
        if warming is not None:
            await warming
            running = {asyncio.ensure_future(w.run()): w for w in _local_workers(client, queues)}
        return await _start_and_follow(args, request, streams, client, queues, running, server)
    finally:
        # In-process workers stop before the embedded server they poll, whatever the outcome; their
        # running tries are cancelled (SIGTERM, so operators' on_kill runs).
        try:
            for pending in (starting, warming):
                if pending is not None and not pending.done():
                    pending.cancel()
            await _stop_workers(running)
        finally:
            if server is not None:
                server.stop()


async def _start_and_follow(
    args: argparse.Namespace,
    request: RunRequest,
    streams: Streams,
    client: Client,
    queues: RunQueues,
    running: dict[asyncio.Future[None], Worker],
    server: DevServer | None,
) -> int:
    from temporalio.client import WorkflowFailureError

    from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult

    ui_url = server.ui_url if server is not None else os.environ.get("TEMPORAL_UI_URL")
    workflow_id = args.workflow_id or f"airflow-standalone-{uuid.uuid4().hex[:12]}"
    handle = await client.start_workflow(
        STANDALONE_WORKFLOW,
        DagExecutionInput(
            dag_path=request.dag_path,
            dag_id=args.dag_id,
            logical_date=request.logical_date,
            conf=request.conf,
            variables=request.variables,
            activity_task_queue=queues.activities,
        ),
        id=workflow_id,
        task_queue=queues.workflows,
        result_type=DagExecutionResult,
        # A busy worker, or one replaying a big run's history after losing it from its cache, may need
        # more than Temporal's default 10 s for one workflow task (as for deep runs).
        task_timeout=timedelta(minutes=1),
    )
    link = f"{ui_url}/namespaces/{client.namespace}/workflows/{workflow_id}" if ui_url else None
    print(f"Workflow {workflow_id} started" + (f": {link}" if link else ""), file=streams.info, flush=True)
    try:
        result: DagExecutionResult = await _await_result(handle, running, streams.info)
    except WorkflowFailureError as err:
        cause = err.cause
        raise RunFailed(getattr(cause, "message", None) or str(cause), workflow_id) from None
    report(result, workflow_id, link, args.output, streams.out)
    return 0 if result.state == "success" else 1


async def _warm_up() -> None:
    """Start the task host (Airflow imports in its own process) and warm the workflows' Airflow code here."""
    from temporal_airflow.activities.task_host_client import warm_up

    workflows = asyncio.ensure_future(asyncio.to_thread(_warm_workflows))
    with sigint_ignored():  # the task host is stopped through its worker, not by a terminal's ^C
        await warm_up()  # starts the host's process; it imports Airflow while the workflows warm up here
    await workflows


def _warm_workflows() -> None:
    """Import and warm up Airflow's scheduling code for the in-process workflow worker."""
    from temporal_airflow.workflows import local_run

    local_run.warm_up()


@dataclass(frozen=True)
class RunQueues:
    """The task queues of one ``run``: the configured ones, or with ``--local-workers`` against a shared
    server, queues private to this invocation, so its in-process workers never take another run's tasks
    (a laptop polling production's queues) and no other workflow can make them import a file."""

    workflows: str
    activities: str

    @classmethod
    def configured(cls) -> RunQueues:
        from temporal_airflow.models.runtime import activity_task_queue, workflow_task_queue

        return cls(workflow_task_queue(), activity_task_queue())

    @classmethod
    def private(cls) -> RunQueues:
        suffix = uuid.uuid4().hex[:12]
        return cls(f"temporal-airflow-run-{suffix}-workflows", f"temporal-airflow-run-{suffix}-activities")


def _local_workers(client: Client, queues: RunQueues) -> list[Worker]:
    from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
    from temporal_airflow.workflows.worker import create_workflow_worker

    return [
        create_workflow_worker(client, task_queue=queues.workflows),
        create_activity_worker(client, task_queue=queues.activities),
        create_service_worker(client, task_queue=queues.activities),
    ]


async def _connect(address: str, embedded: bool) -> Client:
    """A client of ``address``: the environment's settings (envconfig), except for the embedded server.

    The embedded dev server is plaintext and has one namespace: no API key, no TLS from the environment
    (a Temporal Cloud user's ``TEMPORAL_API_KEY`` would otherwise turn TLS on against it). A server that
    is still starting is retried for ~10 s.
    """
    from temporalio.client import Client

    from temporal_airflow.models.converter import data_converter
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.models.telemetry import metrics_runtime

    for attempt in range(50):
        try:
            if embedded:
                return await Client.connect(
                    address, namespace="default", data_converter=data_converter(), runtime=metrics_runtime()
                )
            return await connect_client(address)
        except RuntimeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def _await_result(
    handle: WorkflowHandle[Any, Any], workers: dict[asyncio.Future[None], Worker], info: TextIO
) -> Any:
    """The run's result, with live progress; raises :class:`WorkerStopped` as soon as a worker ends."""
    from temporal_airflow.models import RunProgress

    printer = ProgressPrinter(info)
    result_task = asyncio.ensure_future(handle.result())
    while not result_task.done():
        try:
            progress = await handle.query("progress", result_type=RunProgress)
            printer.update(progress.tasks)
        except Exception:
            pass
        await asyncio.wait([result_task, *workers], timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
        for future, worker in workers.items():
            if future.done() and not result_task.done():
                result_task.cancel()
                error = None if future.cancelled() else future.exception()
                raise WorkerStopped(f"the worker of task queue {worker.task_queue!r} stopped: {error or 'it exited'}")
    result = result_task.result()
    printer.update(result.tasks)
    return result


async def _stop_workers(running: dict[asyncio.Future[None], Worker], timeout: float = 30) -> None:
    """Shut the in-process workers down, then end the task tries they leave running.

    A worker's shutdown may return while its async activities still run: they are cancelled here; each ends
    its task process (SIGTERM, so the operator's ``on_kill`` runs; SIGKILL after a grace period). A worker
    that already ended is not waited for. Past ``timeout`` the command exits anyway and the task host
    follows it (its stdin closes).
    """
    live = [worker for future, worker in running.items() if not future.done()]
    if live:
        await asyncio.wait([asyncio.ensure_future(w.shutdown()) for w in live], timeout=timeout)
    if running:
        await asyncio.wait(list(running), timeout=timeout)
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=timeout)
