"""Determinism: workflow histories replay without a non-determinism error.

Recorded histories (tests/histories/) guard against code changes that would break runs already in
flight: standalone and deep runs with retries, a dead task process, mapping, branching, cancellation,
continue-as-new, a lost worker, a standalone pool's workflow. They are written by the tests that produce
those runs; refresh them all with ``RECORD_HISTORIES=1 uv run pytest -n 0 tests/test_engine.py
tests/test_replay.py tests/test_deep.py tests/test_worker_crash.py tests/test_standalone_pools.py``. A
recorded history with a workflow-task failure in it is a bug, not a fixture: the test fails on it. Live
runs guard the current code, including concurrent workflows in one worker.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import airflow
import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from conftest import EXAMPLES, HISTORIES, TEST_DAGS, DagRunner, assert_healthy, record_history
from temporal_airflow.models.airflow_support import release_line
from temporal_airflow.workflows import airflow_compat, local_run
from temporal_airflow.workflows.plugin import WORKFLOWS


@functools.cache
def _warm_up() -> None:
    """What a workflow worker does when it starts (see ``AirflowWorkflowsPlugin``), once per process: the
    door to Airflow opened, and Airflow's first scheduling turn (seconds) outside any workflow task."""
    airflow_compat.install()
    local_run.warm_up()


def _replayer() -> Replayer:
    _warm_up()
    return Replayer(workflows=WORKFLOWS)


#: Histories of a feature that Airflow added after 3.2: the release line they need to replay.
NEEDS_AIRFLOW = {"retry_policy": (3, 3)}  # a task's retry_policy (airflow.sdk.definitions.retry_policy)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_is_healthy_and_replays(path: Path) -> None:
    needed = NEEDS_AIRFLOW.get(path.stem)
    if needed is not None and release_line(airflow.__version__) < needed:
        pytest.skip(f"needs Airflow {'.'.join(map(str, needed))} or later (found {airflow.__version__})")
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    assert_healthy(history)
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_every_workflow_and_path_has_a_recorded_history() -> None:
    recorded = {p.stem for p in HISTORIES.glob("*.json")}
    expected = {
        "etl", "trigger_rules", "flaky_retry", "branching", "mapped", "retry_policy", "process_dies",
        "cancelled", "long_chain_continued", "long_chain_resumed", "lost_worker",
        "deep_progress", "deep_long_chain_continued", "deep_long_chain_resumed",
        "standalone_pool", "pool_workflow", "pool_workflow_continued", "deep_pool", "deep_task_limit",
        "standalone_task_limit", "replay_budget_continued",
    }  # fmt: skip
    assert expected <= recorded, f"missing recorded histories: {sorted(expected - recorded)}"


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_live_runs_replay(dag_runner: DagRunner) -> None:
    dag_files = {
        "etl": EXAMPLES / "etl.py",
        "trigger_rules": EXAMPLES / "trigger_rules.py",
        "branching": EXAMPLES / "branching.py",
        "mapped": TEST_DAGS / "mapped.py",
    }
    handles = await asyncio.gather(*(dag_runner.start(path) for path in dag_files.values()))
    await asyncio.gather(*(h.result() for h in handles))
    histories = [await h.fetch_history() for h in handles]
    replayer = _replayer()
    for name, history in zip(dag_files, histories, strict=True):
        assert_healthy(history)
        result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        assert result.replay_failure is None
        record_history(name, history)
