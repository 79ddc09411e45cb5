"""A complete local deep-integration stack as plain processes: Postgres, Temporal, Airflow, workers.

Used by ``temporal-airflow up``, the integration tests and the e2e harness on machines without a
Docker engine. Every process listens on 127.0.0.1 only, on free ports; it is stopped by
:meth:`LocalStack.stop`, and gets SIGTERM from the kernel if the process that started it dies.
Secrets are generated per work dir; Postgres data and Temporal's history stay in the work dir too, so
a stack restarted on the same work dir has lost nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.listeners import START_ATTEMPTS, bind_failed, candidate_port, listens_on
from temporal_airflow.cli.local_postgres import LocalPostgres, write_private
from temporal_airflow.cli.processes import die_with_parent


def stack_settings(
    *, sql_alchemy_conn: str, dags_folder: str, log_folder: str, execution_api_url: str, temporal_address: str
) -> dict[str, str]:
    """Settings every Airflow process and worker of a deep-integration stack needs, whatever else is set.

    Runs are handed to Temporal by the orchestrator plugin; DAGs not managed by Temporal run on the
    LocalExecutor.
    """
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CORE__DAGS_FOLDER": dags_folder,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api_url,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": log_folder,
        "TEMPORAL_ADDRESS": temporal_address,
    }


STACK_DEFAULTS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
}
"""Settings of a local or test stack that the user's own environment overrides.

Every user is admin (no login), which suits a local or test stack only.
"""

_SECRET_SETTINGS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")


def stack_secrets(workdir: Path) -> dict[str, str]:
    """The stack's JWT and API secrets: random on first use, then read back from ``workdir/secrets.json``.

    The file is readable by its owner only. Restarting a stack on the same work dir keeps its tokens
    and sessions valid; two stacks never share a secret.
    """
    path = workdir / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    found = {name: secrets.token_urlsafe(32) for name in _SECRET_SETTINGS}
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write_private(tmp, json.dumps(found))
    tmp.replace(path)
    return found


def wait_http(
    url: str, timeout: float, what: str, check_alive: Callable[[], None] | None = None, owner: int | None = None
) -> None:
    """Wait until ``url`` answers below 500; ``check_alive`` may raise early when a component died.

    With ``owner``, the answer counts only once process ``owner`` (or a descendant) listens on the URL's
    port: another server that took the port meanwhile is not mistaken for the one started.
    """
    port = urllib.parse.urlsplit(url).port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check_alive is not None:
            check_alive()
        if owner is not None and port is not None and not listens_on(owner, port):
            time.sleep(0.2)
            continue
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout}s")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class LocalStack:
    """Postgres + Temporal + Airflow (api-server, optional scheduler and dag-processor) + workers."""

    workdir: Path
    dags_folder: Path
    api_port: int = field(default_factory=candidate_port)
    temporal_ui: bool = False
    postgres: LocalPostgres | None = None
    temporal: DevServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: How each process was started (its command and environment), to start it again.
    launches: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def airflow_home(self) -> Path:
        return self.workdir / "airflow-home"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Environment for every Airflow process and worker of this stack."""
        assert self.postgres is not None and self.temporal is not None
        env = {**STACK_DEFAULTS, **stack_secrets(self.workdir), **os.environ}
        env.update(
            stack_settings(
                sql_alchemy_conn=self.postgres.uri,
                dags_folder=str(self.dags_folder),
                log_folder=str(self.airflow_home / "logs"),
                execution_api_url=f"{self.api_url}/execution/",
                temporal_address=self.temporal.address,
            )
        )
        env.update(
            AIRFLOW_HOME=str(self.airflow_home),
            AIRFLOW__API__BASE_URL=self.api_url,
            AIRFLOW__API__PORT=str(self.api_port),
        )
        if self.temporal.ui_url:
            env["TEMPORAL_UI_URL"] = self.temporal.ui_url
        env.update(self.extra_env)
        return env

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # -- lifecycle ----------------------------------------------------------------------------------

    def start_services(self) -> LocalStack:
        """Postgres and Temporal (its history kept in the work dir), Airflow's DB migrated, DAGs serialized.

        A DAG file that does not import does not stop the start: Airflow records its import error
        (``GET /api/v2/importErrors``, the UI's banner) and serializes the other DAGs.
        """
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.postgres = LocalPostgres(self.workdir / "postgres").start()
        self.temporal = DevServer(
            ui=self.temporal_ui, db_file=str(self.workdir / "temporal.db"), log_file=str(self.log_path("temporal"))
        ).start()
        self.airflow("db", "migrate")
        reserialized = self.airflow("dags", "reserialize", check=False)
        self.log_path("reserialize").write_text(reserialized.stdout + reserialized.stderr)
        return self

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command against this stack."""
        proc = subprocess.run(
            [_bin("airflow"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=die_with_parent(),
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def start_process(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.launches[name] = (args, env)
        log = self.log_path(name).open("ab")
        self.processes[name] = subprocess.Popen(
            args,
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def start_api_server(self, timeout: float = 180.0) -> None:
        """Airflow's api-server; started again on another port if its port was taken before it bound it.

        Call it before anything else that reads :meth:`env` (the Execution API URL names the port).
        """
        log = self.log_path("api-server")
        for attempt in range(START_ATTEMPTS):
            if attempt:
                self.api_port = candidate_port()
            since = log.stat().st_size if log.exists() else 0
            command = [_bin("airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)]
            self.start_process("api-server", command, env=None)
            try:
                self.wait_http(f"{self.api_url}/api/v2/monitor/health", timeout, "api-server", "api-server")
                return
            except RuntimeError:
                if not bind_failed(log, since):
                    raise
                self.stop_process("api-server")
        raise RuntimeError(f"api-server: no free port after {START_ATTEMPTS} attempts; see {log}")

    # The scheduler's and triggerer's log servers would listen on every interface; the api-server
    # reads the task logs from the shared folder instead.
    def start_scheduler(self) -> None:
        self.start_process("scheduler", [_bin("airflow"), "scheduler", "--skip-serve-logs"])

    def start_triggerer(self) -> None:
        self.start_process("triggerer", [_bin("airflow"), "triggerer", "--skip-serve-logs"])

    def start_dag_processor(self) -> None:
        self.start_process("dag-processor", [_bin("airflow"), "dag-processor"])

    def start_workers(self, workflow_queue: str | None = None, activity_queue: str | None = None) -> None:
        env = self.env()
        if workflow_queue:
            env["TEMPORAL_WORKFLOW_TASK_QUEUE"] = workflow_queue
        if activity_queue:
            env["TEMPORAL_ACTIVITY_TASK_QUEUE"] = activity_queue
        self.start_process("workers", [_bin("temporal-airflow"), "worker", "all"], env=env)

    def start_activity_worker(self, activity_queue: str, name: str = "activity-worker") -> None:
        env = self.env()
        env["TEMPORAL_ACTIVITY_TASK_QUEUE"] = activity_queue
        self.start_process(name, [_bin("temporal-airflow"), "worker", "activities"], env=env)

    def wait_http(self, url: str, timeout: float, what: str, owner: str | None = None) -> None:
        """Wait for ``url``; with ``owner``, until that process of the stack listens on its port."""
        pid = self.processes[owner].pid if owner else None
        wait_http(url, timeout, what, check_alive=self._check_alive, owner=pid)

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_path(name).read_text()[-3000:]}")

    def restart_process(self, name: str) -> None:
        """Start an exited process again, as it was started."""
        args, env = self.launches[name]
        self.start_process(name, args, env)

    # -- supervision (``temporal-airflow up``) ------------------------------------------------------

    def exit_codes(self) -> dict[str, int]:
        """Every component that has exited, PostgreSQL and Temporal included: name -> exit code."""
        found = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        for name, service in (("postgres", self.postgres), ("temporal", self.temporal)):
            process = service.process if service is not None else None
            if process is not None and process.poll() is not None:
                found[name] = process.returncode
        return found

    def component_log(self, name: str) -> Path:
        if name == "postgres" and self.postgres is not None:
            return self.postgres.log
        return self.log_path(name)

    def restart_component(self, name: str) -> None:
        """Start an exited component again: PostgreSQL and Temporal on their data and their ports (the other
        components reconnect to them), any other process as it was started."""
        if name == "postgres" and self.postgres is not None:
            self.postgres.start()
        elif name == "temporal" and self.temporal is not None:
            self.temporal.restart()
        else:
            self.restart_process(name)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            _stop_groups([proc], sig, timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop the Airflow processes and workers all at once, then Temporal, then Postgres."""
        processes = list(self.processes.values())
        self.processes.clear()
        _stop_groups(processes, signal.SIGTERM, timeout)
        if self.temporal is not None:
            self.temporal.stop()
        if self.postgres is not None:
            self.postgres.stop()


def _stop_groups(processes: list[subprocess.Popen[bytes]], sig: int, timeout: float) -> None:
    """Send ``sig`` to each process's group; after the leaders exit (or ``timeout``), SIGKILL what is left."""
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    deadline = time.monotonic() + timeout
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(deadline - time.monotonic(), 0))
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
