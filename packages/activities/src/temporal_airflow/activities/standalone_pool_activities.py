"""Pools for standalone runs: a try takes its slots from the pool's workflow (``temporal_airflow.workflows.pools``).

The pools and their sizes are this worker's configuration, ``TEMPORAL_AIRFLOW_POOLS=name=slots,other=slots``,
read at every acquisition (a resized pool applies at the next one). ``acquire_standalone_pool_slot`` sends
the pool workflow's ``acquire`` update with update-with-start, so the first acquisition starts the
workflow. A full pool is a retryable, benign error (logged at DEBUG level only): Temporal retries the
activity with backoff on the server, and the wait adds nothing to the run's history. A pool that is not
configured (Airflow fails a task whose pool does not exist), or has fewer slots than the task needs, can
never admit the try: a non-retryable error that names the pool and the variable. ``default_pool`` is never
taken (the workflow does not ask for it). A task's ``max_active_tis_per_dag`` is a pool of its own, sized by
the DAG (``models.task_limit_pool``), held the same way.

``find_closed_pool_holders`` is how a pool workflow finds slots a run never gave back: it describes each
holder's run and answers those that have closed (or are gone).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from temporal_airflow.models import (
    ACQUIRE_STANDALONE_POOL_SLOT_ACTIVITY,
    FIND_CLOSED_POOL_HOLDERS_ACTIVITY,
    POOL_ACQUIRE_UPDATE,
    POOL_FULL_ERROR,
    POOL_UNAVAILABLE_ERROR,
    POOL_WORKFLOW,
    POOLS_ENV,
    PoolAcquisition,
    PoolHolders,
    PoolSlotRequest,
    PoolState,
    pool_workflow_id,
)


def configured_pools() -> dict[str, int]:
    """The standalone pools and their sizes, from :data:`POOLS_ENV` (``name=slots,other=slots``)."""
    pools = {}
    for item in filter(None, (part.strip() for part in os.environ.get(POOLS_ENV, "").split(","))):
        name, _, size = item.rpartition("=")
        if not name.strip() or not size.strip().isdigit():
            raise ApplicationError(
                f"{POOLS_ENV}: {item!r} is not name=slots", type=POOL_UNAVAILABLE_ERROR, non_retryable=True
            )
        pools[name.strip()] = int(size)
    return pools


@activity.defn(name=ACQUIRE_STANDALONE_POOL_SLOT_ACTIVITY)
async def acquire_standalone_pool_slot(request: PoolSlotRequest) -> None:
    """Take the try's slots of its pool once the pool has room (see the module docstring)."""
    pool, needed = request.pool, request.holder.slots
    size = configured_pools().get(pool) if request.size is None else request.size
    if size is None or size < needed:
        reason = f"is not configured (set {POOLS_ENV}=name=slots)" if size is None else f"has {size} slots"
        raise ApplicationError(
            f"task try {request.holder.try_id} needs {needed} slot(s) of pool {pool!r}, which {reason}",
            type=POOL_UNAVAILABLE_ERROR,
            non_retryable=True,
        )
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        POOL_WORKFLOW,
        PoolState(pool=pool, service_task_queue=activity.info().task_queue, size=size),
        id=pool_workflow_id(pool),
        task_queue=request.workflow_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"slots of standalone pool {pool}",
    )
    try:
        await activity.client().execute_update_with_start_workflow(
            POOL_ACQUIRE_UPDATE, PoolAcquisition(request.holder, size), start_workflow_operation=start
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == POOL_FULL_ERROR:
            raise ApplicationError(
                cause.message, type=POOL_FULL_ERROR, category=ApplicationErrorCategory.BENIGN
            ) from None
        raise


@activity.defn(name=FIND_CLOSED_POOL_HOLDERS_ACTIVITY)
async def find_closed_pool_holders(held: PoolHolders) -> PoolHolders:
    """The holders whose run (that very execution) is no longer running, or no longer known."""
    client = activity.client()
    running: dict[tuple[str, str], bool] = {}
    for holder in held.holders:
        run = holder.workflow_id, holder.run_id
        if run not in running:
            running[run] = await _is_running(client, *run)
    return PoolHolders([h for h in held.holders if not running[h.workflow_id, h.run_id]])


async def _is_running(client: Client, workflow_id: str, run_id: str) -> bool:
    try:
        described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return described.status == WorkflowExecutionStatus.RUNNING


STANDALONE_POOL_ACTIVITIES: list[Callable[..., Any]] = [acquire_standalone_pool_slot, find_closed_pool_holders]
