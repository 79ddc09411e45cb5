"""The ``temporal-airflow run`` command as a user runs it, on the embedded dev server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from conftest import EXAMPLES, TEST_DAGS
from temporal_airflow.models import DEFAULT_WORKFLOW_TASK_QUEUE

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "temporal-airflow")


# Airflow's example plugins include an event listener that prints "Dag run in success state": Airflow's
# own output, which the CLI keeps off the terminal unless --verbose.
WITH_EXAMPLE_LISTENER = {"AIRFLOW__CORE__LOAD_EXAMPLES": "True"}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"} | (env or {})
    return subprocess.run([CLI, "run", *args], capture_output=True, text=True, timeout=600, env=environ)


def _progress(out: str) -> list[str]:
    """The live progress lines: ``state  task (try N[, 1.2s])``."""
    return [line.strip() for line in out.splitlines() if re.match(r"  \w+ +\S+ \(try \d+", line)]


def test_run_prints_progress_states_xcoms_and_ui_link() -> None:
    proc = _run(str(EXAMPLES / "etl.py"), env=WITH_EXAMPLE_LISTENER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Started embedded Temporal dev server" in out
    assert "DAG example_etl" in out and "SUCCESS" in out
    assert 'return_value="Pune"' in out
    assert "Temporal UI: http://127.0.0.1:" in out

    progress = _progress(out)
    assert progress[0].split()[0] == "running"
    assert re.fullmatch(r"success +load \(try 1, \d+\.\ds\)", progress[-3])
    # In the order things happened: every try's running line before its final state, load after extract.
    for task in ("extract", "transform.hottest", "load"):
        running = progress.index(f"{'running':<16} {task} (try 1)")
        done = next(i for i, line in enumerate(progress) if line.startswith(f"{'success':<16} {task} (try 1, "))
        assert running < done
    assert progress.index(f"{'running':<16} load (try 1)") > progress.index(f"{'running':<16} extract (try 1)")

    # Airflow's own lines go to a log file, named on the terminal.
    assert "Dag run in success state" not in proc.stdout + proc.stderr
    found = re.search(r"Airflow's own output goes to (\S+)", out)
    assert found and "Dag run in success state" in Path(found.group(1)).read_text()


def test_json_output_is_one_document_and_exit_code_follows_the_run() -> None:
    proc = _run(str(EXAMPLES / "trigger_rules.py"), "--output", "json", "--verbose", env=WITH_EXAMPLE_LISTENER)
    assert proc.returncode == 1
    assert "Dag run  in failure state" in proc.stderr  # --verbose: Airflow's output on the terminal
    document = json.loads(proc.stdout)
    assert document["state"] == "failed"
    assert document["tasks"]["boom"]["state"] == "failed"
    assert "this task fails on purpose" in document["tasks"]["boom"]["error"]
    assert document["tasks"]["ok"] == {"state": "success", "try_number": 1, "xcoms": {"return_value": "fine"}}


def test_conf_and_logical_date_reach_templates() -> None:
    proc = _run(
        str(EXAMPLES / "bash_templating.py"),
        "--conf",
        '{"name": "cli"}',
        "--logical-date",
        "2024-02-29",
        "--output",
        "json",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["tasks"]["greet"]["xcoms"]["return_value"] == "hello cli on 2024-02-29"


def test_import_error_exits_nonzero_naming_the_file() -> None:
    proc = _run(str(TEST_DAGS / "broken_import.py"))
    assert proc.returncode == 1
    assert "broken_import.py" in proc.stderr and "this_module_does_not_exist" in proc.stderr


def test_bad_arguments_are_rejected_before_anything_starts() -> None:
    assert "--conf is not valid JSON" in _run(str(EXAMPLES / "etl.py"), "--conf", "{nope").stderr
    assert "DAG file not found" in _run("no/such/dag.py").stderr


async def test_local_workers_on_a_shared_server_poll_queues_of_their_own(client: Client) -> None:
    """``--local-workers`` against a shared server: the run's workflow and its tries go to queues private to
    this invocation, never to the deployment's default queues."""
    address = client.service_client.config.target_host
    proc = await asyncio.to_thread(
        _run, str(EXAMPLES / "etl.py"), "--address", address, "--local-workers", "--output", "json"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(proc.stdout)
    description = await client.get_workflow_handle(document["workflow_id"]).describe()
    assert description.task_queue.startswith("temporal-airflow-run-")
    assert description.task_queue != DEFAULT_WORKFLOW_TASK_QUEUE


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        # A Temporal Cloud user's API key must not turn TLS on against the embedded (plaintext) server.
        ((), {"TEMPORAL_API_KEY": "a-cloud-key"}, None),
        (("--address", "127.0.0.1:9"), {}, "Failed client connect"),
    ],
)
def test_start_up_problems_end_in_one_clear_line(args: tuple[str, ...], env: dict[str, str], says: str | None) -> None:
    proc = _run(str(EXAMPLES / "etl.py"), "--output", "json", *args, env=env)
    document = json.loads(proc.stdout)
    if says is None:
        assert proc.returncode == 0 and document["state"] == "success", proc.stderr[-3000:]
        return
    assert proc.returncode == 1
    assert document["state"] == "error" and says in document["error"]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert says in line and "details in" in line
