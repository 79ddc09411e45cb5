"""Full garbage collections of the workflow worker happen between workflow tasks, never inside one.

Every run a worker keeps in its cache holds Airflow's objects: its deserialized DAG and its in-memory
DB's rows, some 20,000 tracked objects for a small DAG. Python's collector, left alone, starts a full pass
whenever a thread allocates past its thresholds: typically a run's first turn, which builds a DAG run.
That pass walks every cached run's objects while holding the GIL (0.5-1.3 s measured with 20 cached
runs on a busy 2-core machine, several seconds with 100), and the workflow task that happened to trigger
it overruns Temporal's 2 s deadlock detector.

So the worker turns off Python's automatic full passes (young generations are still collected as
usual: their cost does not grow with the cache) and makes them itself, on its event loop, at a moment when
no workflow task is in flight: while the event loop is busy collecting, no new workflow task starts, so no
deadlock timer runs. :class:`CountingExecutor` (the workers' workflow-task thread pool) knows what is
in flight. A pass that found no quiet moment for :data:`OVERDUE` runs anyway, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)

#: How often the collector looks for a quiet moment.
CHECK_EVERY = 0.5
#: A full pass is due after this many young (generation 1) passes, Python's own default rule.
DUE_AFTER_YOUNG_PASSES = 10
#: A due pass that found no quiet moment this long runs anyway (workflow tasks in flight wait for it).
OVERDUE = 60.0
#: Python never starts a full pass on its own with this threshold.
_NEVER = 1 << 30

_lock = threading.Lock()
_in_flight = 0


class CountingExecutor(ThreadPoolExecutor):
    """The workflow-task thread pool; counts the activations in flight across all such pools."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        global _in_flight
        with _lock:
            _in_flight += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(_done)
        return future


def _done(_future: Future[Any]) -> None:
    global _in_flight
    with _lock:
        _in_flight -= 1


def in_flight() -> int:
    """Workflow activations submitted to a :class:`CountingExecutor` and not finished."""
    return _in_flight


#: Workers running in this process (each runs a collector; the first sets, the last restores Python's rule).
_workers: list[int] = []
_python_rule: list[int] = []


@asynccontextmanager
async def collections_between_tasks() -> AsyncIterator[None]:
    """While a worker runs: Python's automatic full passes off, ours on the event loop (module docstring)."""
    if not _workers:
        young, middle, old = gc.get_threshold()
        _python_rule[:] = [old]
        gc.set_threshold(young, middle, _NEVER)
    _workers.append(1)
    task = asyncio.create_task(_collect_when_quiet())
    try:
        yield
    finally:
        task.cancel()
        _workers.pop()
        if not _workers:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, *_python_rule)


async def _collect_when_quiet() -> None:
    due_since: float | None = None
    while True:
        await asyncio.sleep(CHECK_EVERY)
        if gc.get_count()[2] < DUE_AFTER_YOUNG_PASSES:
            continue
        now = time.monotonic()
        due_since = due_since or now
        busy = in_flight()
        if busy and now - due_since < OVERDUE:
            continue
        started = time.perf_counter()
        collected = gc.collect()
        took = time.perf_counter() - started
        due_since = None
        level = logging.WARNING if busy else logging.DEBUG
        log.log(level, "Full garbage collection: %.2f s, %d collected, %d workflow tasks waited", took, collected, busy)
