"""Input of a standalone run (a DAG file, no Airflow services) and of the DAG-file parse it starts with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporal_airflow.models.names import DEFAULT_ACTIVITY_TASK_QUEUE, DEFAULT_REPLAY_BUDGET
from temporal_airflow.models.run_state import RunSnapshot


@dataclass
class DagExecutionInput:
    """Input of the standalone workflow: run one DAG from a DAG file, no Airflow services needed.

    ``variables`` are handed to tasks (``Variable.get``); connections come from the activity worker's
    environment (``AIRFLOW_CONN_*``) or its secrets backend so that no password enters history.
    """

    dag_path: str
    dag_id: str | None = None
    run_id: str | None = None
    logical_date: datetime | None = None
    conf: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    activity_task_queue: str = DEFAULT_ACTIVITY_TASK_QUEUE
    #: A task's worker is presumed dead after this long without a heartbeat (the try then resumes
    #: on another worker, same Airflow try number).
    task_heartbeat_timeout_seconds: float = 60.0
    #: Task instances one execution's turns may evaluate before it continues as new (see
    #: ``DEFAULT_REPLAY_BUDGET``).
    replay_budget: int = DEFAULT_REPLAY_BUDGET
    #: Set by the workflow itself when it continues as new: the run so far.
    resume: RunSnapshot | None = None


@dataclass
class LoadDagFileInput:
    """Input of ``load_dag_file``: parse a DAG file on an activity worker."""

    dag_path: str
    dag_id: str | None = None


@dataclass
class LoadDagFileResult:
    """The DAG in Airflow's serialized form, ready for the scheduler logic in the workflow."""

    dag_id: str
    fileloc: str
    serialized_dag: dict[str, Any]
