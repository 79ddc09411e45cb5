"""Durable waits of deferred tasks: the workflow's triggerer.

A deferred task waits for its trigger's first event, or until its ``trigger_timeout``. Time triggers
(whose moment the activity worker read when the task deferred) are a workflow timer: no process runs
while they wait, and a worker restart loses nothing. Any other trigger runs its own ``async run()`` in
the ``run_airflow_trigger`` activity, heartbeating; a lost worker starts it again elsewhere (triggers
are restartable by design). What ends the wait is handed back as a :class:`TriggerOutcome` for the
driver to resume the task with; a timeout or a failed trigger are outcomes too, with Airflow's reasons.

Waits are not tries: they hold no slot of ``max_active_tasks`` and do not keep the run from continuing
as new. They are dropped then, and the next execution starts them again from the snapshot (a timer for
the time that is left, the trigger from the start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from airflow.models.trigger import TriggerFailureReason
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError

from temporal_airflow.models import (
    RUN_TRIGGER_ACTIVITY,
    TRIGGER_FAILED_ERROR,
    ActivityTaskInput,
    Deferral,
    TriggerInput,
    TriggerOutcome,
)
from temporal_airflow.workflows.values import TaskKey

#: A trigger without ``trigger_timeout`` may wait this long; liveness is guarded by heartbeats.
_NO_TIMEOUT = timedelta(days=365)
#: A lost trigger worker is replaced for as long as the deferral lasts; a trigger that raises is final.
_TRIGGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=[TRIGGER_FAILED_ERROR],
)

TaskInputFor = Callable[[TaskKey], ActivityTaskInput]


class DeferralWaits:
    """The running waits of one run's deferred task instances, and the outcomes that ended some."""

    def __init__(self, service_task_queue: str, heartbeat_timeout: timedelta) -> None:
        self.service_task_queue = service_task_queue
        self.heartbeat_timeout = heartbeat_timeout
        self.woken: list[tuple[TaskKey, TriggerOutcome]] = []
        self._waiting: dict[TaskKey, asyncio.Task[None]] = {}

    @property
    def active(self) -> bool:
        return bool(self._waiting)

    def watch(self, key: TaskKey, deferral: Deferral, task_input: TaskInputFor) -> None:
        """Start waiting for ``key``'s trigger (once)."""
        if key not in self._waiting:
            self._waiting[key] = asyncio.create_task(self._wait(key, deferral, task_input))

    def take(self) -> list[tuple[TaskKey, TriggerOutcome]]:
        woken, self.woken = self.woken, []
        return woken

    def stop(self, key: TaskKey) -> None:
        """Stop waiting for ``key``'s trigger (its task instance was marked by a user)."""
        if (task := self._waiting.pop(key, None)) is not None:
            task.cancel()

    def cancel(self) -> None:
        """Stop every wait (the run ends or continues as new; the snapshot keeps the deferrals)."""
        for task in self._waiting.values():
            task.cancel()
        self._waiting.clear()

    async def _wait(self, key: TaskKey, deferral: Deferral, task_input: TaskInputFor) -> None:
        if deferral.moment is not None and deferral.moment_event is not None:
            outcome = await self._timer(key, deferral.moment, deferral.moment_event, deferral.timeout_at)
        else:
            outcome = await self._trigger(key, deferral, task_input(key))
        self._waiting.pop(key, None)
        self.woken.append((key, outcome))

    async def _timer(
        self, key: TaskKey, moment: datetime, event: TriggerOutcome, timeout_at: datetime | None
    ) -> TriggerOutcome:
        if timeout_at is not None and timeout_at < moment:
            await _sleep_until(timeout_at, f"{key.label}: trigger timeout")
            return _timed_out()
        await _sleep_until(moment, f"{key.label}: deferred until {moment.isoformat()}")
        return event

    async def _trigger(self, key: TaskKey, deferral: Deferral, task: ActivityTaskInput) -> TriggerOutcome:
        timeout = None if deferral.timeout_at is None else max(deferral.timeout_at - workflow.now(), timedelta(0))
        try:
            outcome: TriggerOutcome = await workflow.execute_activity(
                RUN_TRIGGER_ACTIVITY,
                TriggerInput(task=task, deferral=deferral),
                result_type=TriggerOutcome,
                task_queue=self.service_task_queue,
                activity_id=f"{key.activity_id(task.try_number)}:trigger",
                summary=f"{key.label}: {deferral.classpath.rsplit('.', 1)[-1]}",
                start_to_close_timeout=timeout or _NO_TIMEOUT,
                schedule_to_close_timeout=timeout,
                heartbeat_timeout=self.heartbeat_timeout,
                retry_policy=_TRIGGER_RETRY,
                cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, TimeoutError):
                return _timed_out()
            return TriggerOutcome(failure=TriggerFailureReason.TRIGGER_FAILURE.value, traceback=[str(cause or err)])
        return outcome


async def _sleep_until(moment: datetime, summary: str) -> None:
    delay = moment - workflow.now()
    if delay > timedelta(0):
        await workflow.sleep(delay, summary=summary)


def _timed_out() -> TriggerOutcome:
    return TriggerOutcome(failure=TriggerFailureReason.TRIGGER_TIMEOUT.value)
