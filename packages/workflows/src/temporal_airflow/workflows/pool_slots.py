"""A run's side of standalone pools: a try holds its pool's slots while it runs.

The slots come from the pool's workflow (``temporal_airflow.workflows.pools``, which says why it exists):
taken by an activity on the service queue before the try starts, given back by a signal when the try
ends, however it ends (success, failure, cancellation, a user's mark). The signal costs the run's history
two events and needs no worker; a run that dies without sending it is found by the pool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import workflow
from temporalio.exceptions import FailureError

from temporal_airflow.models import (
    ACQUIRE_STANDALONE_POOL_SLOT_ACTIVITY,
    POOL_RELEASE_SIGNAL,
    PoolHolder,
    PoolSlotRequest,
    pool_workflow_id,
)


@contextlib.asynccontextmanager
async def holding_slots(
    pool: str, slots: int, try_id: str, config: workflow.ActivityConfig, size: int | None = None
) -> AsyncIterator[None]:
    """Hold ``slots`` of a standalone pool for the try ``try_id`` of the calling run workflow, and give them
    back when the try ends; ``config`` says how to run the acquisition (on the service queue); ``size``
    sizes a pool the DAG defines (a task limit), where a configured pool's comes from the worker."""
    info = workflow.info()
    holder = PoolHolder(workflow_id=info.workflow_id, run_id=info.run_id, try_id=try_id, slots=slots)
    request = PoolSlotRequest(pool, holder, workflow_task_queue=info.task_queue, size=size)
    # A cancelled try waits for an acquisition in flight to finish, so that the release comes after it.
    acquisition = workflow.ActivityConfig(**config)
    acquisition["cancellation_type"] = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    try:
        await workflow.execute_activity(ACQUIRE_STANDALONE_POOL_SLOT_ACTIVITY, request, **acquisition)
        yield
    finally:
        await _release(pool, holder)


async def _release(pool: str, holder: PoolHolder) -> None:
    """Signal the pool that the holder's try ended; shielded, so that a try being cancelled still does."""
    handle = workflow.get_external_workflow_handle(pool_workflow_id(pool))
    try:
        await asyncio.shield(asyncio.ensure_future(handle.signal(POOL_RELEASE_SIGNAL, holder)))
    except FailureError as err:  # the pool workflow is not running: the try held nothing
        workflow.logger.debug("Pool %s: nothing to release for %s (%s)", pool, holder.try_id, err)
