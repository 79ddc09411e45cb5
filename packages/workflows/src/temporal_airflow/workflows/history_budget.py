"""When a workflow's history is full: the one rule every long-lived workflow of this package follows.

Both the DAG-run workflows (:mod:`temporal_airflow.workflows.driver`) and the pool workflows
(:mod:`temporal_airflow.workflows.pools`) continue as new when :func:`history_is_full` says so: Temporal
suggests it, or the history passed our own budget, kept below Temporal's warning thresholds (10,240
events, 10 MB). Workflow code only: it reads ``workflow.info()``.
"""

from __future__ import annotations

from temporalio import workflow

HISTORY_EVENT_BUDGET = 8_000
HISTORY_BYTES_BUDGET = 8 * 1024 * 1024


def history_is_full() -> bool:
    """Temporal suggests a new execution, or the history passed our own budget."""
    info = workflow.info()
    return (
        info.is_continue_as_new_suggested()
        or info.get_current_history_length() >= HISTORY_EVENT_BUDGET
        or info.get_current_history_size() >= HISTORY_BYTES_BUDGET
    )
