"""The workflow worker's full garbage collections wait for a moment with no workflow task in flight
(:mod:`temporal_airflow.workflows.collector`): a full pass over many cached runs' objects, started inside a
workflow task, would hold it past Temporal's 2 s deadlock detector."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from temporal_airflow.workflows import collector
from temporal_airflow.workflows.plugin import AirflowWorkflowsPlugin


@pytest.fixture
def full_passes() -> Iterator[list[int]]:
    """Each full (generation 2) collection, as it starts: how many workflow tasks were in flight."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append(collector.in_flight())

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)


def _make_due() -> None:
    """Allocate until Python has made enough young passes for a full one to be due."""
    keep: list[list[list[int]]] = []
    while gc.get_count()[2] < collector.DUE_AFTER_YOUNG_PASSES:
        keep.append([[] for _ in range(1000)])


async def test_full_passes_wait_until_no_workflow_task_is_in_flight(
    full_passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "CHECK_EVERY", 0.05)
    executor = collector.CountingExecutor(max_workers=2)
    release = threading.Event()
    async with collector.collections_between_tasks():
        assert gc.get_threshold()[2] >= 1 << 30  # Python starts no full pass by itself meanwhile
        turn = asyncio.get_running_loop().run_in_executor(executor, release.wait, 5)
        _make_due()
        await asyncio.sleep(0.5)
        assert collector.in_flight() == 1 and full_passes == []  # due, but a workflow task runs
        release.set()
        await turn
        await asyncio.sleep(0.5)
        assert full_passes and set(full_passes) == {0}
    assert gc.get_threshold()[2] < 1 << 30  # Python's own rule is back
    executor.shutdown()


async def test_an_overdue_full_pass_runs_even_with_workflow_tasks_in_flight(
    full_passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded on a worker that is never idle."""
    monkeypatch.setattr(collector, "CHECK_EVERY", 0.05)
    monkeypatch.setattr(collector, "OVERDUE", 0.3)
    executor = collector.CountingExecutor(max_workers=2)
    release = threading.Event()
    async with collector.collections_between_tasks():
        turn = asyncio.get_running_loop().run_in_executor(executor, release.wait, 5)
        _make_due()
        await asyncio.sleep(1)
        assert full_passes == [1]
        release.set()
        await turn
    executor.shutdown()


def test_the_plugin_gives_workers_the_counting_pool_unless_they_bring_their_own() -> None:
    plugin = AirflowWorkflowsPlugin()
    config = plugin.configure_worker({"task_queue": "q"})  # type: ignore[typeddict-item]
    assert isinstance(config["workflow_task_executor"], collector.CountingExecutor)
    own = collector.ThreadPoolExecutor(max_workers=1)
    assert plugin.configure_worker({"task_queue": "q", "workflow_task_executor": own})["workflow_task_executor"] is own  # type: ignore[typeddict-item]
