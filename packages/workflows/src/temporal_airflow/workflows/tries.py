"""One task try as an activity: its timeouts, its infrastructure retries, the pool slots it holds.

The driver (:mod:`temporal_airflow.workflows.driver`) decides which tries start; :class:`TryRunner` runs
one: ``run_airflow_task`` on the task's queue, with Airflow's ``execution_timeout`` (plus a grace) as the
activity's limit, heartbeats for liveness, and a bounded retry of the *same* try for infrastructure
trouble only. A try of a task in a pool other than ``default_pool``, or with ``max_active_tis_per_dag``,
first takes its slots (deep mode: in Airflow's DB; standalone: from the pool workflows) and gives them
back when it ends, however it ends. The command sequence here is part of every recorded history.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError

from temporal_airflow.models import (
    ACQUIRE_POOL_SLOT_ACTIVITY,
    DEFAULT_POOL,
    DEFAULT_REPLAY_BUDGET,
    POOL_UNAVAILABLE_ERROR,
    RUN_TASK_ACTIVITY,
    TASK_PROCESS_DIED_ERROR,
    XCOM_TOO_LARGE_ERROR,
    ActivityTaskInput,
    TaskExecutionResult,
    service_task_queue,
    task_limit_pool,
)
from temporal_airflow.workflows.local_run import LocalDagRun
from temporal_airflow.workflows.pool_slots import holding_slots
from temporal_airflow.workflows.values import TaskKey

#: Extra time granted beyond a task's own ``execution_timeout`` (Airflow enforces that one itself).
_TIMEOUT_GRACE = timedelta(minutes=2)
#: A task without ``execution_timeout`` may run this long; liveness is guarded by heartbeats.
_NO_TIMEOUT = timedelta(days=365)
#: Infrastructure trouble (a lost worker, the metadata DB away for a while) retries the same Airflow try,
#: at most 4 more times over ~30 s of backoff. A task's own failure never gets here: it is an outcome,
#: and a dead task process is a non-retryable error (one failed try).
_INFRA_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[TASK_PROCESS_DIED_ERROR, XCOM_TOO_LARGE_ERROR],
)
#: Patch ids (``workflow.patched``): runs recorded before these features replay without them.
_TASK_LIMIT_ACROSS_RUNS = "task-limit-across-runs"
_STANDALONE_POOLS = "standalone-pools"
#: Waiting for a pool's slots (Airflow's in deep mode, a standalone pool's workflow otherwise) is Temporal
#: retrying the acquisition, with backoff on the server (no history event per attempt), for as long as it takes.
_POOL_WAIT = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
    non_retryable_error_types=[POOL_UNAVAILABLE_ERROR],
)
#: A try's input may carry at most this many bytes of XCom values inline (Temporal caps payloads at
#: 2 MiB); above it the try fails with a clear error instead of wedging the workflow. With a payload
#: store configured, values above a small size travel by reference and never count here.
MAX_INLINE_INPUT_BYTES = 1536 * 1024


@dataclass
class DriverOptions:
    """How task activities are started."""

    dag_path: str
    activity_task_queue: str
    heartbeat_timeout: timedelta
    variables: dict[str, str] = field(default_factory=dict)
    deep_integration: bool = False
    replay_budget: int = DEFAULT_REPLAY_BUDGET


def _waits_for(pool: str | None, per_dag: int | None) -> list[str]:
    """What a try's slot acquisition waits for, for its summary in Temporal's UI."""
    waits = [f"slot of pool {pool}"] if pool not in (None, DEFAULT_POOL) else []
    return waits + ([f"one of {per_dag} per DAG"] if per_dag else [])


def oversized_input(key: TaskKey, task_input: ActivityTaskInput, inline: int, now: datetime) -> TaskExecutionResult:
    """The failed try of a task whose XCom input (``inline`` bytes) cannot travel inline (no payload store)."""
    error = (
        f"{XCOM_TOO_LARGE_ERROR}: the XComs {key.label} pulls add up to {inline} bytes, over the "
        f"{MAX_INLINE_INPUT_BYTES} bytes a task input may carry inline; configure a payload store "
        "(TEMPORAL_AIRFLOW_PAYLOAD_STORAGE) so large values travel by reference"
    )
    return TaskExecutionResult(
        task_id=key.task_id,
        map_index=key.map_index,
        state="failed",
        try_number=task_input.try_number,
        start_date=now,
        end_date=now,
        error=error,
    )


class TryRunner:
    """Runs one run's tries as activities (see the module docstring)."""

    def __init__(self, local: LocalDagRun, options: DriverOptions) -> None:
        self.local = local
        self.options = options

    async def run(self, key: TaskKey, task_input: ActivityTaskInput) -> tuple[TaskExecutionResult | None, str | None]:
        """The try's outcome, or why it produced none (its activity failed: lost worker, dead process)."""
        execution_timeout = self.local.task_attribute(key.task_id, "execution_timeout")
        start_to_close = execution_timeout + _TIMEOUT_GRACE if execution_timeout else _NO_TIMEOUT
        try:
            async with self._take_pool_slots(key, task_input):
                result = await workflow.execute_activity(
                    RUN_TASK_ACTIVITY,
                    task_input,
                    result_type=TaskExecutionResult,
                    task_queue=self.options.activity_task_queue,
                    activity_id=key.activity_id(task_input.try_number),
                    summary=f"{key.label} (try {task_input.try_number})",
                    start_to_close_timeout=start_to_close,
                    heartbeat_timeout=self.options.heartbeat_timeout,
                    retry_policy=_INFRA_RETRY,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    priority=Priority(priority_key=self.local.priority_key(key)),
                )
            return result, None
        except ActivityError as err:
            cause = err.cause or err
            return None, f"{type(cause).__name__}: {cause}"

    @contextlib.asynccontextmanager
    async def _take_pool_slots(self, key: TaskKey, task_input: ActivityTaskInput) -> AsyncIterator[None]:
        """Hold the task's pool slots (of a pool other than ``default_pool``) while its try runs: deep mode
        takes them in Airflow's DB (Airflow counts them until the try ends) together with the task's
        ``max_active_tis_per_dag`` across runs, standalone mode from the pool's workflow and the task
        limit's (a pool of its own, :func:`task_limit_pool`), given back when the try ends, however it ends."""
        pool = self.local.task_attribute(key.task_id, "pool")
        per_dag = self.local.task_attribute(key.task_id, "max_active_tis_per_dag")
        if per_dag and not workflow.patched(_TASK_LIMIT_ACROSS_RUNS):
            per_dag = None  # a run that started before: counted within the run only
        if pool in (None, DEFAULT_POOL) and not per_dag:
            yield
            return
        config = workflow.ActivityConfig(
            task_queue=service_task_queue(self.options.activity_task_queue),
            activity_id=f"{key.activity_id(task_input.try_number)}:pool",
            summary=f"{key.label}: " + ", ".join(_waits_for(pool, per_dag)),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_POOL_WAIT,
            priority=Priority(priority_key=self.local.priority_key(key)),
        )
        if self.options.deep_integration:
            request = dataclasses.replace(task_input, max_active_tis_per_dag=per_dag)
            await workflow.execute_activity(ACQUIRE_POOL_SLOT_ACTIVITY, request, **config)
            yield
            return
        try_id = key.activity_id(task_input.try_number)
        async with contextlib.AsyncExitStack() as held:
            if pool not in (None, DEFAULT_POOL) and workflow.patched(_STANDALONE_POOLS):
                slots = self.local.task_attribute(key.task_id, "pool_slots") or 1
                await held.enter_async_context(holding_slots(pool, slots, try_id, config))
            if per_dag:
                limit = task_limit_pool(task_input.run.dag_id, key.task_id)
                config = config.copy()
                config["activity_id"], config["summary"] = f"{try_id}:limit", f"{key.label}: one of {per_dag} per DAG"
                await held.enter_async_context(holding_slots(limit, 1, try_id, config, size=per_dag))
            yield
