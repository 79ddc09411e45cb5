"""Determinism: workflow histories replay without a non-determinism error.

Recorded histories (tests/histories/) guard against code changes that would break runs already in
flight; live runs guard the current code, including concurrent workflows in one worker.
Set RECORD_HISTORIES=1 to refresh the recorded ones from the live runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from conftest import EXAMPLES, TEST_DAGS, DagRunner
from temporal_airflow.workflows import clock
from temporal_airflow.workflows.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


def _replayer() -> Replayer:
    clock.install()
    return Replayer(workflows=WORKFLOWS)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_live_runs_replay(dag_runner: DagRunner) -> None:
    dag_files = {
        "etl": EXAMPLES / "etl.py",
        "trigger_rules": EXAMPLES / "trigger_rules.py",
        "flaky_retry": EXAMPLES / "flaky_retry.py",
        "branching": EXAMPLES / "branching.py",
        "mapped": TEST_DAGS / "mapped.py",
    }
    handles = await asyncio.gather(*(dag_runner.start(path) for path in dag_files.values()))
    await asyncio.gather(*(h.result() for h in handles))
    histories = [await h.fetch_history() for h in handles]
    replayer = _replayer()
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        assert result.replay_failure is None
    if os.environ.get("RECORD_HISTORIES"):
        for name, history in zip(dag_files, histories, strict=True):
            (HISTORIES / f"{name}.json").write_text(history.to_json())
