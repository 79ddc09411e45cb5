"""Deferred tasks without Airflow's triggerer: a trigger as a heartbeating activity.

A deferral that waits for a time needs no activity (the workflow's durable timer,
:mod:`temporal_airflow.activities.deferrals`); any other trigger runs in ``run_airflow_trigger``: its own
``async run()``, in a fresh child process of the task host (like a task try), heartbeating until its first
event, which the task then resumes with, as under Airflow's triggerer.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.task_activities import task_log_path
from temporal_airflow.activities.task_host_client import ChildFailed, run_in_child
from temporal_airflow.models import RUN_TRIGGER_ACTIVITY, TRIGGER_FAILED_ERROR, TriggerInput, TriggerOutcome


@activity.defn(name=RUN_TRIGGER_ACTIVITY)
async def run_airflow_trigger(trigger_input: TriggerInput) -> TriggerOutcome:
    """Run a deferred task's trigger until its first event, heartbeating meanwhile.

    A trigger that raises ends as Airflow's ``Trigger failure`` (the task resumes only to fail, with the
    traceback in its log); so does a classpath that names no allowed trigger class
    (:mod:`temporal_airflow.activities.trigger_classes`), which is never built. A lost worker makes
    Temporal start the trigger again elsewhere.
    """
    task = trigger_input.task
    trigger = trigger_input.deferral.classpath
    activity.logger.info("Waiting for %s of %s.%s try %s", trigger, task.run.dag_id, task.task_id, task.try_number)
    try:
        outcome: TriggerOutcome = await run_in_child(
            "trigger", trigger_input, log_path=task_log_path(task), dag_path=task.dag_path
        )
    except ChildFailed as err:
        raise ApplicationError(str(err), type=TRIGGER_FAILED_ERROR, non_retryable=True) from None
    return outcome


TRIGGER_ACTIVITIES = [run_airflow_trigger]
