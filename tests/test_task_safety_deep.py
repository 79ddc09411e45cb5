"""Deep mode never runs a finished try again: a redelivered activity (its completion was lost) returns the
outcome Airflow's DB recorded for that try. Runs against the deep-mode stack of test_deep.py (PostgreSQL,
migrated Airflow DB, api-server, activity worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import test_deep
from temporalio.client import Client

from conftest import Queues
from temporal_airflow.cli.airflow_rest import AirflowRest
from temporal_airflow.cli.local_stack import LocalStack

# The deep-mode stack fixtures of test_deep.py (module-scoped: this module gets its own stack).
stack = test_deep.stack
api = test_deep.api

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("deep"),
    pytest.mark.asyncio(loop_scope="session"),
]

# Delivers one try again to task_process.run_task_try, the child side of run_airflow_task, in the stack's
# Airflow environment; prints the result.
REDELIVER = """
import json, sys
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from sqlalchemy import select
from temporal_airflow.activities.task_process import run_task_try
from temporal_airflow.models import ActivityTaskInput, RunContext

dag_id, run_id, task_id, try_number = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with create_session() as session:
    run = RunContext.of(session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)))
    fileloc = session.scalar(select(DagModel.fileloc).where(DagModel.dag_id == dag_id))
task = ActivityTaskInput(fileloc, task_id, try_number, max_tries=0, run=run, deep_integration=True,
                         delivery_attempt=2)  # as Temporal redelivers it
result = run_task_try(task)
print("RESULT " + json.dumps({"state": result.state, "start_date": result.start_date.isoformat(),
                              "end_date": result.end_date.isoformat(), "error": result.error}))
"""


def redeliver(deep_stack: LocalStack, dag_id: str, run_id: str, task_id: str, try_number: int) -> dict:
    args = [sys.executable, "-c", REDELIVER, dag_id, run_id, task_id, str(try_number)]
    proc = subprocess.run(args, env=deep_stack.env(), capture_output=True, text=True, timeout=300, cwd=Path.cwd())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


async def test_a_redelivered_finished_try_returns_its_recorded_outcome(
    client: Client, queues: Queues, workflow_worker: None, api: AirflowRest, stack: LocalStack
) -> None:
    result = await (await test_deep.start_deep(client, queues, "example_trigger_rules")).result()
    before = api.task_instances("example_trigger_rules", result.run_id)
    assert (before["ok"]["state"], before["boom"]["state"]) == ("success", "failed")

    for task_id in ("ok", "boom"):
        recorded = before[task_id]
        again = redeliver(stack, "example_trigger_rules", result.run_id, task_id, recorded["try_number"])
        assert again["state"] == recorded["state"]
        assert _same_instant(again["start_date"], recorded["start_date"])
        assert (again["error"] is None) == (task_id == "ok")

    after = api.task_instances("example_trigger_rules", result.run_id)
    for task_id in ("ok", "boom"):  # not queued, not run again: the row is exactly as the try left it
        fields = ("state", "try_number", "start_date", "end_date")
        assert {f: after[task_id][f] for f in fields} == {f: before[task_id][f] for f in fields}


def _same_instant(a: str, b: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(a.replace("Z", "+00:00")) == datetime.fromisoformat(b.replace("Z", "+00:00"))
