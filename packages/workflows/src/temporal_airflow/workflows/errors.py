"""Turning activity failures that retrying cannot fix into workflow failures."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError


def workflow_failure(err: ActivityError) -> BaseException:
    """The error to fail the workflow with: the activity's own (non-retryable) error, if it had one."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return err
