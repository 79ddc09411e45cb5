"""Deep integration: the workflow runs against a real Airflow metadata DB.

Input of the deep workflow and of the activities that load its serialized DAG, create and start its
``DagRun``, and mirror the workflow's task and run states into Airflow's DB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporal_airflow.models.names import DEFAULT_ACTIVITY_TASK_QUEUE, DEFAULT_REPLAY_BUDGET
from temporal_airflow.models.run_state import RunSnapshot, TaskSummary
from temporal_airflow.models.task_try import RunContext, XComEntry


@dataclass
class DeepDagExecutionInput:
    """Input of the deep workflow; ``run_id`` names an existing DagRun or is ``None`` to create one."""

    dag_id: str
    logical_date: datetime | None = None
    run_id: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)
    activity_task_queue: str = DEFAULT_ACTIVITY_TASK_QUEUE
    task_heartbeat_timeout_seconds: float = 60.0
    #: Task instances one execution's turns may evaluate before it continues as new (see
    #: ``DEFAULT_REPLAY_BUDGET``).
    replay_budget: int = DEFAULT_REPLAY_BUDGET
    #: Set by the workflow itself when it continues as new: the run so far.
    resume: RunSnapshot | None = None


@dataclass
class LoadSerializedDagInput:
    """Input of ``load_serialized_dag``."""

    dag_id: str


@dataclass
class LoadSerializedDagResult:
    """Serialized DAG as stored in Airflow's DB, with its file and version."""

    dag_id: str
    fileloc: str
    serialized_dag: dict[str, Any]
    dag_version_id: str | None = None


@dataclass
class CreateDagRunInput:
    """Input of ``create_dagrun_record``; ``run_id`` is generated when absent."""

    dag_id: str
    logical_date: datetime | None = None
    run_id: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)


@dataclass
class CreateDagRunResult:
    """The DagRun now in Airflow's DB (created or found)."""

    run_id: str
    dag_run_id: int
    created: bool
    run_context: RunContext | None = None


@dataclass
class EnsureTaskInstancesInput:
    """Input of ``ensure_task_instances``."""

    dag_id: str
    run_id: str


@dataclass
class PreviousRunInput:
    """Input of ``load_previous_run``: the run, and the tasks whose previous task instances matter."""

    dag_id: str
    run_id: str
    task_ids: list[str]
    #: The DAG's ``catchup``: Airflow then looks back to the previous *scheduled* run only.
    catchup: bool = False


@dataclass
class PreviousRun:
    """The run before this one, as ``depends_on_past`` sees it: its states and those task instances."""

    run_id: str
    logical_date: datetime
    run_type: str
    state: str
    tasks: list[TaskSummary] = field(default_factory=list)


@dataclass
class PreviousRunResult:
    """The previous run, ``None`` when this is the DAG's first (or has no logical date)."""

    previous: PreviousRun | None = None


@dataclass
class TaskInstancesSnapshot:
    """The task instances of a run as Airflow's DB has them (cleared tasks have no state)."""

    tasks: list[TaskSummary] = field(default_factory=list)


@dataclass
class StartDeepRunResult:
    """Result of ``start_deep_run``: the DAG, the DagRun (created or found, now ``running``), its task
    instances, as ``load_serialized_dag``, ``create_dagrun_record`` and ``ensure_task_instances`` give them."""

    dag: LoadSerializedDagResult
    run: CreateDagRunResult
    task_instances: TaskInstancesSnapshot


@dataclass
class TaskStatusSync:
    """One task instance's state to write to Airflow's DB (idempotent, never moves state backwards)."""

    dag_id: str
    run_id: str
    task_id: str
    state: str
    try_number: int
    map_index: int = -1
    start_date: datetime | None = None
    end_date: datetime | None = None
    hostname: str | None = None
    xcoms: list[XComEntry] = field(default_factory=list)


@dataclass
class TaskStatusSyncBatch:
    """Task statuses written in one ``sync_task_status`` call."""

    updates: list[TaskStatusSync] = field(default_factory=list)


@dataclass
class DagRunStatusSync:
    """A DagRun's state to write to Airflow's DB."""

    dag_id: str
    run_id: str
    state: str
    end_date: datetime | None = None
