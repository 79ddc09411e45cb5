"""Pools for standalone runs: ``PoolWorkflow`` holds a named pool's slots for every run on the namespace.

Why a workflow: a standalone run has no Airflow DB, hence no pool rows to count and lock (deep mode takes
Airflow's own), yet a DAG's ``pool`` / ``pool_slots`` must limit its tries across all the runs that use
the pool. One workflow per pool name (``pool_workflow_id``) keeps who holds how many slots, durably: a
worker or server restart loses nothing, and Temporal serializes every acquisition and release.

- A try takes its slots before it starts (``temporal_airflow.workflows.pool_slots``): the
  ``acquire_standalone_pool_slot`` activity sends the ``acquire`` update with update-with-start (the
  workflow starts with the first acquisition), with the pool's size from the activity worker's
  configuration, so a resized pool applies at the next acquisition. The update's validator refuses it
  while the pool has no room: a refused update leaves no event in this history, and Temporal retrying the
  activity (no event in the run's history either) is the wait. Acquiring again for a holder that already
  holds is a no-op (a retried activity whose reply was lost).
- The try gives its slots back with the ``release`` signal when it ends, however it ends: the run
  workflow sends it from a ``finally``, after any acquisition in flight has finished.
- A run that never sends it (terminated, timed out, reset) must not keep its slots: while the pool has
  holders it asks, every ``check_every_seconds``, which holders' runs have closed (an activity describes
  them) and releases those.
- History stays bounded: the workflow continues as new with its holders when its history is full (as a
  run's: Temporal suggests it, or past the driver's budget), once its handlers have finished; after
  ``_IDLE_LINGER`` without holders it completes, and the next acquisition starts it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from temporal_airflow.models import (
    FIND_CLOSED_POOL_HOLDERS_ACTIVITY,
    POOL_ACQUIRE_UPDATE,
    POOL_FULL_ERROR,
    POOL_RELEASE_SIGNAL,
    POOL_STATE_QUERY,
    POOL_WORKFLOW,
    PoolAcquisition,
    PoolHolder,
    PoolHolders,
    PoolState,
)
from temporal_airflow.workflows.history_budget import history_is_full

#: A pool without holders for this long completes (the next acquisition starts it again).
_IDLE_LINGER = timedelta(minutes=10)
#: Describing the holders' runs: given up after this long (no worker on the queue), tried again next time.
_CHECK_TIMEOUT = timedelta(minutes=2)

HolderKey = tuple[str, str, str]


def _key(holder: PoolHolder) -> HolderKey:
    return holder.workflow_id, holder.run_id, holder.try_id


@workflow.defn(name=POOL_WORKFLOW, sandboxed=False)
class PoolWorkflow:
    """One standalone pool: grants slots while it has room, takes them back (see the module docstring)."""

    @workflow.init
    def __init__(self, state: PoolState) -> None:
        self._state = state
        self._holders: dict[HolderKey, PoolHolder] = {_key(h): h for h in state.holders}

    @workflow.run
    async def run(self, state: PoolState) -> None:
        check_every = timedelta(seconds=state.check_every_seconds)
        while not history_is_full():
            if self._holders:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(history_is_full, timeout=check_every, timeout_summary="check holders")
                if self._holders and not history_is_full():
                    await self._release_closed_runs()
                continue
            try:
                await workflow.wait_condition(
                    lambda: bool(self._holders) or history_is_full(), timeout=_IDLE_LINGER, timeout_summary="idle"
                )
            except TimeoutError:
                if not self._holders:
                    return
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.state())

    @workflow.update(name=POOL_ACQUIRE_UPDATE)
    def acquire(self, request: PoolAcquisition) -> None:
        """Grant the holder its slots (validated first: see :meth:`refuse_when_full`)."""
        self.refuse_when_full(request)  # two acquisitions validated in one activation: the second may not fit
        self._state.size = request.size
        self._holders[_key(request.holder)] = request.holder

    @acquire.validator
    def refuse_when_full(self, request: PoolAcquisition) -> None:
        """Refuse an acquisition the pool has no room for now (a holder already holding is granted again)."""
        if _key(request.holder) in self._holders:
            return
        taken = sum(h.slots for h in self._holders.values())
        if taken + request.holder.slots > request.size:
            raise ApplicationError(
                f"pool {self._state.pool!r} has {max(request.size - taken, 0)} of {request.size} slots open, "
                f"{request.holder.try_id} needs {request.holder.slots}; waiting",
                type=POOL_FULL_ERROR,
            )

    @workflow.signal(name=POOL_RELEASE_SIGNAL)
    def release(self, holder: PoolHolder) -> None:
        """The holder's try ended: its slots are open again (a holder that holds nothing is ignored)."""
        self._holders.pop(_key(holder), None)

    @workflow.query(name=POOL_STATE_QUERY)
    def state(self) -> PoolState:
        """The pool as it stands: its last known size and its holders."""
        return dataclasses.replace(self._state, holders=list(self._holders.values()))

    async def _release_closed_runs(self) -> None:
        """Release the holders whose run has closed without releasing (terminated, timed out, reset)."""
        try:
            closed: PoolHolders = await workflow.execute_activity(
                FIND_CLOSED_POOL_HOLDERS_ACTIVITY,
                PoolHolders(list(self._holders.values())),
                result_type=PoolHolders,
                task_queue=self._state.service_task_queue,
                schedule_to_close_timeout=_CHECK_TIMEOUT,
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
                summary="holders whose run has closed",
            )
        except ActivityError as err:
            workflow.logger.warning("Pool %s: could not check its holders: %s", self._state.pool, err.cause or err)
            return
        for holder in closed.holders:
            workflow.logger.warning(
                "Pool %s: run %s closed holding %s slot(s) for %s; released",
                self._state.pool,
                holder.workflow_id,
                holder.slots,
                holder.try_id,
            )
            self.release(holder)
