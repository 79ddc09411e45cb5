"""A DAG run as the workflows report it: per-task summaries, the snapshot carried across continue-as-new,
the final result, the progress query and a mark set from Airflow's UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporal_airflow.models.task_try import Deferral, Reschedule, RunContext, XComEntry


@dataclass
class TaskSummary:
    """Final state of one task instance of a run."""

    task_id: str
    state: str | None
    try_number: int
    map_index: int = -1
    start_date: datetime | None = None
    end_date: datetime | None = None
    xcoms: list[XComEntry] = field(default_factory=list)
    error: str | None = None
    #: Delay Airflow's runner asked for before the next try (a task's ``retry_policy``), if any.
    retry_delay_seconds: float | None = None
    #: A sensor waiting for its next poke (``up_for_reschedule``).
    reschedule: Reschedule | None = None
    #: A task waiting for its trigger (``deferred``).
    deferral: Deferral | None = None


@dataclass
class RunSnapshot:
    """A run's state carried into the workflow's next execution when it continues as new.

    Only finished tries and tries waiting to be retried are carried (the workflow drains running tries
    before it continues), so the next execution re-runs nothing that already ran.
    """

    run: RunContext
    fileloc: str
    serialized_dag: dict[str, Any]
    tasks: list[TaskSummary] = field(default_factory=list)
    #: How many executions of this workflow came before (1 after the first continue-as-new).
    generation: int = 1
    #: The tasks as one JSON text, in place of ``tasks`` (see ``temporal_airflow.workflows.summaries``):
    #: thousands of dataclasses cost seconds to convert inside a workflow activation, one string nothing.
    tasks_json: str = ""


@dataclass
class AssetUpdate:
    """An asset a succeeded task instance updated (one of its ``outlets``)."""

    uri: str
    name: str
    task_id: str
    map_index: int = -1


@dataclass
class DagExecutionResult:
    """Result of a workflow: the run's final state and every task's."""

    dag_id: str
    run_id: str
    state: str
    tasks: list[TaskSummary] = field(default_factory=list)
    start_date: datetime | None = None
    end_date: datetime | None = None
    #: Standalone mode: the assets the run's succeeded tasks updated (their declared ``outlets``). Deep
    #: mode records them as Airflow's own asset events instead.
    asset_updates: list[AssetUpdate] = field(default_factory=list)


@dataclass
class TaskMark:
    """A state a user gave one task instance (Airflow's "mark success/failed/skipped"; ``None``: cleared,
    it runs again): the run goes on from it as Airflow's scheduler would, and a try of it still running
    is stopped."""

    task_id: str
    state: str | None
    map_index: int = -1


@dataclass
class RunProgress:
    """Live view of a run, served by the workflows' ``progress`` query."""

    dag_id: str
    run_id: str
    state: str
    tasks: list[TaskSummary] = field(default_factory=list)
