"""``temporal-airflow run`` and ``up`` leave no process behind, however they are stopped.

Real commands, real signals: each test collects the command's whole process tree (by PID) while it is
busy, stops the command one way (Ctrl-C as a terminal sends it, twice, SIGTERM to a background job
that ignores SIGINT, SIGKILL), then checks that every one of those processes is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from conftest import TEST_DAGS
from temporal_airflow.cli.airflow_rest import AirflowRest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "temporal-airflow")


@dataclass
class Command:
    """A CLI command started in its own session (as a shell starts a job), its output in files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    seen: list[psutil.Process] = field(default_factory=list)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        """The command's process and all its descendants now (remembered, to clean up after a failure)."""
        root = psutil.Process(self.proc.pid)
        tree = [root, *root.children(recursive=True)]
        self.seen.extend(tree)
        return tree

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)


@contextmanager
def command(
    tmp_path: Path, *args: str, ignore_sigint: bool = False, env: dict[str, str] | None = None
) -> Iterator[Command]:
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    environ = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"} | (env or {})
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [CLI, *args], stdout=out, stderr=err, env=environ, start_new_session=True, preexec_fn=preexec
        )
    cmd = Command(proc, stdout, stderr)
    try:
        yield cmd
    finally:
        proc.kill()
        proc.wait()
        for process in cmd.seen:
            if _alive(process):  # only if a test failed: leave nothing behind
                process.kill()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, cmd: Command) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if cmd.proc.poll() is not None:
            pytest.fail(f"the command exited ({cmd.proc.returncode}) before {what}:\n{cmd.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout}s:\n{cmd.output()[-4000:]}")
        time.sleep(0.5)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(tree: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := [p for p in tree if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for process in left:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:150]}")
        except psutil.Error:
            continue
    assert not described, "left behind:\n" + "\n".join(described)


# -- temporal-airflow run -----------------------------------------------------------------------------


@contextmanager
def run_mid_task(tmp_path: Path, *extra: str, ignore_sigint: bool = False) -> Iterator[tuple[Command, list]]:
    """``run`` of a DAG whose tasks sleep, once two tries are running; with its process tree then."""
    marker = tmp_path / "marker.txt"
    conf = json.dumps({"marker": str(marker), "seconds": 300})
    dag = str(TEST_DAGS / "slow_tasks.py")
    with command(tmp_path, "run", dag, "--conf", conf, *extra, ignore_sigint=ignore_sigint) as cmd:
        wait_for(lambda: marker.exists() and marker.read_text().count("start") == 2, 180, "two running tries", cmd)
        tree = cmd.tree()
        # The CLI, the embedded Temporal server, the task host and the two tries' processes at least.
        assert len(tree) >= 5, [p.cmdline() for p in tree]
        yield cmd, tree


def assert_clean_exit(cmd: Command, code: int) -> None:
    assert cmd.proc.wait(60) == code, cmd.output()[-4000:]
    assert "Traceback" not in cmd.output(), cmd.output()[-4000:]


def test_run_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    with run_mid_task(tmp_path) as (cmd, tree):
        cmd.ctrl_c()
        assert_clean_exit(cmd, 128 + signal.SIGINT)
        assert_all_gone(tree, 15)
    assert "SIGINT: stopping" in cmd.output() and "Stopped." in cmd.output()


def test_run_second_ctrl_c_during_shutdown_is_harmless(tmp_path: Path) -> None:
    with run_mid_task(tmp_path, "--verbose") as (cmd, tree):
        cmd.ctrl_c()
        wait_for(lambda: "SIGINT: stopping" in cmd.output(), 60, "the first Ctrl-C to start the shutdown", cmd)
        cmd.ctrl_c()
        assert_clean_exit(cmd, 128 + signal.SIGINT)
        assert_all_gone(tree, 15)
    assert "Still stopping" in cmd.output()


def test_run_in_background_ignores_sigint_and_stops_on_sigterm(tmp_path: Path) -> None:
    with run_mid_task(tmp_path, ignore_sigint=True) as (cmd, tree):
        cmd.ctrl_c()  # a background job of a non-interactive shell ignores SIGINT
        cmd.proc.terminate()  # delivered after the SIGINT: an exit code of 143, not 130, shows it was ignored
        assert_clean_exit(cmd, 128 + signal.SIGTERM)
        assert_all_gone(tree, 15)
    assert "SIGINT" not in cmd.output()


def test_run_sigkilled_takes_its_processes_with_it(tmp_path: Path) -> None:
    with run_mid_task(tmp_path) as (cmd, tree):
        cmd.proc.kill()
        cmd.proc.wait()
        assert_all_gone(tree, 15)


# -- temporal-airflow up ------------------------------------------------------------------------------

GOOD_DAG = """
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["temporal"])
def hygiene_ok():
    @task
    def hello() -> str:
        return "hi"
    hello()

hygiene_ok()
"""

GATED_DAG = """
import time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["temporal"])
def hygiene_gated():
    @task
    def body(**context) -> str:
        conf = context["dag_run"].conf
        log, gate = Path(conf["log"]), Path(conf["gate"])
        with log.open("a") as fh:
            fh.write("start\\n")
        while not gate.exists():
            time.sleep(0.2)
        with log.open("a") as fh:
            fh.write("end\\n")
        return "done"
    body()

hygiene_gated()
"""

# Names both "airflow" and "dag", or the dag-processor's safe mode would not even look at it.
BROKEN_DAG = "from airflow.sdk import dag\nimport this_module_does_not_exist_anywhere\n"


@contextmanager
def up_started(tmp_path: Path) -> Iterator[tuple[Command, str, Path]]:
    """``up`` on a DAGs folder with one good and one broken DAG; yields it, its UI URL and work dir."""
    dags, workdir = tmp_path / "dags", tmp_path / "stack"
    dags.mkdir()
    (dags / "hygiene_ok.py").write_text(GOOD_DAG)
    (dags / "hygiene_broken.py").write_text(BROKEN_DAG)
    (dags / "hygiene_gated.py").write_text(GATED_DAG)
    with command(tmp_path, "up", "--dags-folder", str(dags), "--workdir", str(workdir)) as cmd:
        wait_for(lambda: "Press Ctrl-C" in cmd.output(), 600, "ready banner", cmd)
        found = re.search(r"Airflow UI\s+(\S+)", cmd.output())
        assert found, cmd.output()
        yield cmd, found.group(1), workdir


def _listening(tree: list[psutil.Process]) -> set[str]:
    addresses = set()
    for process in tree:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    addresses.add(conn.laddr.ip)
        except psutil.Error:
            continue
    return addresses


def _import_errors(api: AirflowRest) -> dict[str, str]:
    try:
        return api.import_errors()
    except (urllib.error.URLError, OSError):
        return {}


@pytest.mark.xdist_group("up")
def test_up_stack_is_local_records_import_errors_restarts_dead_components_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    with up_started(tmp_path) as (cmd, api_url, workdir):
        banner = cmd.output()
        assert "On Temporal  DAGs tagged 'temporal'; other DAGs run on Airflow's LocalExecutor" in banner
        api = AirflowRest(api_url)
        wait_for(lambda: any("hygiene_broken.py" in f for f in _import_errors(api)), 180, "import error", cmd)
        assert "this_module_does_not_exist_anywhere" in "".join(_import_errors(api).values())
        assert {dag["dag_id"] for dag in api.request("GET", "dags")["dags"]} == {"hygiene_ok", "hygiene_gated"}
        tree = cmd.tree()
        commands = [" ".join(p.cmdline()) for p in tree if _alive(p)]
        for component in ("api_server", "scheduler", "dag-processor", "triggerer", "worker all", "postgres"):
            assert any(component in c.replace("api-server", "api_server") for c in commands), (component, commands)
        assert _listening(tree) == {"127.0.0.1"}
        secrets = workdir / "secrets.json"
        assert secrets.stat().st_mode & 0o777 == 0o600 and (workdir / "temporal.db").exists()

        # A component that dies is started again; the rest of the stack stays up.
        schedulers = [p for p in tree if _alive(p) and "airflow scheduler" in " ".join(p.cmdline())]
        scheduler = next(p for p in schedulers if p.ppid() not in {q.pid for q in schedulers})  # not a child
        scheduler.kill()
        wait_for(lambda: "scheduler started again" in cmd.output(), 60, "the scheduler to start again", cmd)
        assert cmd.proc.poll() is None
        tree = cmd.tree()

        _kill_temporal_then_postgres_mid_task(cmd, api, tmp_path)
        tree = cmd.tree()

        cmd.proc.terminate()
        assert_clean_exit(cmd, 0)
        assert_all_gone(tree, 15)
    assert "Stopped." in cmd.output()


def _kill_temporal_then_postgres_mid_task(cmd: Command, api: AirflowRest, tmp_path: Path) -> None:
    """SIGKILL Temporal, then PostgreSQL, while a managed task runs: ``up`` starts each again, the run
    succeeds and its task body ran once."""
    log, gate = tmp_path / "gated.log", tmp_path / "gated.gate"
    run_id = api.trigger("hygiene_gated", {"log": str(log), "gate": str(gate)})
    wait_for(lambda: log.exists() and "start" in log.read_text(), 180, "the gated task to start", cmd)
    for service, marker in (("temporal", "temporal server start-dev"), ("postgres", "postgres -D")):
        (process,) = [p for p in cmd.tree() if _alive(p) and marker in " ".join(p.cmdline())]
        process.kill()
        restarted = f"{service} started again"
        wait_for(lambda: restarted in cmd.output(), 90, restarted, cmd)  # noqa: B023 - called at once
    gate.touch()
    wait_for(lambda: _run_state(api, run_id) == "success", 120, "the gated run to succeed", cmd)
    assert log.read_text().split() == ["start", "end"]


def _run_state(api: AirflowRest, run_id: str) -> str | None:
    try:
        return str(api.run("hygiene_gated", run_id)["state"])
    except (urllib.error.URLError, OSError):
        return None  # the api-server answers 500 while its DB is away


@pytest.mark.xdist_group("up")
def test_up_sigkilled_takes_the_whole_stack_with_it(tmp_path: Path) -> None:
    with up_started(tmp_path) as (cmd, _, _):
        tree = cmd.tree()
        cmd.proc.kill()
        cmd.proc.wait()
        assert_all_gone(tree, 30)
