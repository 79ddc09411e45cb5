"""``temporal-airflow up``: a complete local deep-integration stack, supervised until Ctrl-C.

The command itself only supervises: the stack runs in a child process of its own process group (a
terminal's Ctrl-C reaches it once, from here) which is a subreaper, so whatever Airflow's processes leave
behind is re-parented to it and stopped at the end. A component that exits is started again after a
pause that doubles while it keeps exiting.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from temporal_airflow.cli.processes import ShutdownSignals, become_subreaper, die_with_parent, stop_descendants

if TYPE_CHECKING:
    from temporal_airflow.cli.local_stack import LocalStack


def up(args: argparse.Namespace) -> int:
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
    """Keep the stack up until a signal: a component that exits (PostgreSQL or Temporal killed, Airflow's
    scheduler exiting while its DB is away, as under any supervisor) is started again, after a pause that
    doubles while it keeps exiting. PostgreSQL and Temporal come back on their data and their ports, so
    the rest reconnects by itself."""
    pauses: dict[str, float] = {}
    started: dict[str, float] = {}
    due: dict[str, float] = {}
    while True:
        time.sleep(1)
        now = time.monotonic()
        exited = stack.exit_codes()
        for name in [name for name in pauses if name not in exited and now - started.get(name, 0.0) > _STEADY]:
            del pauses[name]
        for name, code in exited.items():
            if name not in due:
                pauses[name] = min(pauses.get(name, 0.5) * 2, 30.0)
                due[name] = now + pauses[name]
                print(
                    f"{name} exited with code {code} (see {stack.component_log(name)}); "
                    f"starting it again in {pauses[name]:.0f} s",
                    flush=True,
                )
            elif now >= due[name]:
                del due[name]
                try:
                    stack.restart_component(name)
                except (RuntimeError, TimeoutError) as error:
                    print(f"{name} did not start again: {error}", flush=True)
                    continue
                started[name] = time.monotonic()
                print(f"{name} started again", flush=True)


def managed_dags_description(env: dict[str, str]) -> str:
    """Which DAGs the orchestrator plugin hands to Temporal, in its own words, for the stack's environment."""
    from temporal_airflow.orchestrator.config import TemporalSettings

    return TemporalSettings.load(env).describe_managed()
