"""The contract of one task try: what an activity of a try (or of its trigger or callback) gets and returns.

The workflow (standalone or deep) fills these in; the activity worker runs the try through Airflow's own
task runner and answers with a :class:`TaskExecutionResult`. XCom values travel as the JSON text that
Airflow's XCom serializer produced; the workflow never needs to understand them. Values above a small
inline size travel by reference (``value_ref``): the activity worker stores them through the shared
payload store and the next task's worker reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class XComEntry:
    """One XCom: ``value_json`` is the JSON text produced by Airflow's XCom serializer."""

    task_id: str
    key: str
    value_json: str
    map_index: int = -1
    #: Set when the value is a list that a downstream mapped task expands over.
    mapped_length: int | None = None
    #: Set instead of ``value_json`` when the value lives in the payload store (the store's claim, as JSON).
    value_ref: str | None = None


@dataclass
class RunContext:
    """What a task sees of its DagRun (``dag_run``, ``logical_date``, ``data_interval_*``, ``params``)."""

    dag_id: str
    run_id: str
    run_type: str
    run_after: datetime
    start_date: datetime
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    conf: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, dag_run: Any) -> RunContext:
        """The context of an Airflow ``DagRun`` (read by attribute: no Airflow import here)."""
        return cls(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            run_type=str(dag_run.run_type),
            run_after=dag_run.run_after,
            start_date=dag_run.start_date or dag_run.run_after,
            logical_date=dag_run.logical_date,
            data_interval_start=dag_run.data_interval_start,
            data_interval_end=dag_run.data_interval_end,
            conf=dict(dag_run.conf or {}),
        )


@dataclass
class Reschedule:
    """A reschedule-mode sensor between two pokes (what Airflow keeps as ``TaskReschedule`` rows)."""

    #: When the next poke may start (the sensor computed it: ``poke_interval``, backoff, ``max_wait``).
    reschedule_date: datetime
    #: Start of the try's first poke: the sensor's ``timeout`` counts from it.
    first_start_date: datetime
    #: Pokes of this try that asked to be rescheduled so far.
    count: int = 1


@dataclass
class Deferral:
    """A try that deferred itself (``self.defer(...)``): the trigger to wait for, and how to resume.

    Kwargs are the JSON the task runner sent (Airflow's serde encoding); the workflow never decodes them.
    """

    classpath: str
    trigger_kwargs: dict[str, Any] | str
    next_method: str
    next_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The trigger's ``trigger_timeout`` as a deadline: past it the task resumes only to fail.
    timeout_at: datetime | None = None
    #: Set for time triggers (``DateTimeTrigger``, ``TimeDeltaTrigger``): the moment they fire. The
    #: workflow waits for it on a timer instead of running the trigger, then resumes with ``moment_event``.
    moment: datetime | None = None
    moment_event: TriggerOutcome | None = None


@dataclass
class TriggerOutcome:
    """How a deferral ended: the trigger's first event, or Airflow's failure reason for the task."""

    #: The event's payload (serde-encoded JSON); the task resumes with it as ``event``.
    payload: Any = None
    #: Set when the event ends the task itself (``TaskSuccessEvent`` and friends): its final state.
    task_state: str | None = None
    #: Airflow's ``TriggerFailureReason`` (``Trigger timeout``, ``Trigger failure``): the task resumes
    #: through ``__fail__`` and fails the way Airflow fails it.
    failure: str | None = None
    traceback: list[str] | None = None


@dataclass
class ActivityTaskInput:
    """Input of ``run_airflow_task``: one try of one task instance."""

    dag_path: str
    task_id: str
    try_number: int
    max_tries: int
    run: RunContext
    map_index: int = -1
    #: XComs of the task's upstream tasks, so ``xcom_pull`` and TaskFlow arguments resolve.
    upstream_xcoms: list[XComEntry] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    #: True in deep mode: connections, variables and XComs come from Airflow's metadata DB.
    deep_integration: bool = False
    #: A reschedule-mode sensor's earlier pokes of this try (its timeout counts from the first).
    reschedule: Reschedule | None = None
    #: Set when the try resumes after a deferral: the method to call and its kwargs (with ``event``).
    next_method: str | None = None
    next_kwargs: dict[str, Any] | None = None
    #: Deep mode, when the try takes its slot: the task's ``max_active_tis_per_dag``, counted across runs.
    max_active_tis_per_dag: int | None = None
    #: Set by the activity worker: Temporal's attempt of this activity. Only a redelivered activity
    #: (attempt above 1: a lost worker or a lost completion) may find its try already ended.
    delivery_attempt: int = 1


@dataclass
class TriggerInput:
    """Input of ``run_airflow_trigger``: run the trigger ``task`` deferred to until its first event.

    The trigger reads connections and variables the way the task does (``task`` says how).
    """

    task: ActivityTaskInput
    deferral: Deferral


@dataclass
class DagCallbackInput:
    """Input of ``run_dag_callback``: a finished run's ``on_success_callback`` / ``on_failure_callback``.

    ``request_json`` is the ``DagCallbackRequest`` Airflow's ``DagRun.update_state`` made when it decided
    the run's state (the run, its last task instance, the reason), as Airflow's own JSON.
    """

    dag_path: str
    request_json: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskExecutionResult:
    """Outcome of one try: state as Airflow's task runner decided it, XComs the task pushed."""

    task_id: str
    state: str
    try_number: int
    start_date: datetime
    end_date: datetime
    map_index: int = -1
    xcoms: list[XComEntry] = field(default_factory=list)
    #: Task ids a branch / short-circuit operator asked to skip.
    skipped_task_ids: list[str] = field(default_factory=list)
    #: Seconds Airflow's runner asked to wait before the next try (``up_for_retry`` only).
    retry_delay_seconds: float | None = None
    error: str | None = None
    traceback: str | None = None
    hostname: str | None = None
    #: When the next poke may start (``up_for_reschedule`` only).
    reschedule_date: datetime | None = None
    #: What the try deferred to (``deferred`` only).
    deferral: Deferral | None = None
