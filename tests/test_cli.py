"""The ``temporal-airflow run`` command as a user runs it, on the embedded dev server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, TEST_DAGS

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "temporal-airflow")


def _run(*args: str, env_address: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    return subprocess.run([CLI, "run", *args], capture_output=True, text=True, timeout=600, env=env)


def test_run_prints_progress_states_xcoms_and_ui_link() -> None:
    proc = _run(str(EXAMPLES / "etl.py"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Started embedded Temporal dev server" in out
    assert "running          extract (try 1)" in out  # live progress
    assert "DAG example_etl" in out and "SUCCESS" in out
    assert 'return_value="Pune"' in out
    assert "Temporal UI: http://127.0.0.1:" in out


def test_json_output_is_one_document_and_exit_code_follows_the_run() -> None:
    proc = _run(str(EXAMPLES / "trigger_rules.py"), "--output", "json")
    assert proc.returncode == 1
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
