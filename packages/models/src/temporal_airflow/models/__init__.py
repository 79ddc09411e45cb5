"""Wire contract shared by every temporal-airflow component.

Plain dataclasses only (standard library, no Airflow import) so that the orchestrator plugin, the
workflow worker and the activity worker can each be installed alone and still agree on what crosses
Temporal. Every type here round-trips through Temporal's default data converter.

XCom values travel as the JSON text that Airflow's own XCom serializer produced; the workflow never
needs to understand them. Values above a small inline size travel by reference (``value_ref``): the
activity worker stores them through the shared payload store and the next task's worker reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Names of workflows and activities: the contract between starters, workflows and activity workers.
STANDALONE_WORKFLOW = "execute_airflow_dag"
DEEP_WORKFLOW = "execute_airflow_dag_deep"
LOAD_DAG_FILE_ACTIVITY = "load_dag_file"
RUN_TASK_ACTIVITY = "run_airflow_task"
LOAD_SERIALIZED_DAG_ACTIVITY = "load_serialized_dag"
CREATE_DAGRUN_ACTIVITY = "create_dagrun_record"
ENSURE_TASK_INSTANCES_ACTIVITY = "ensure_task_instances"
SYNC_TASK_STATUS_ACTIVITY = "sync_task_status"
SYNC_DAGRUN_STATUS_ACTIVITY = "sync_dagrun_status"
#: The four above that start a deep run (load, create, ensure, ``running``), in one round trip.
START_DEEP_RUN_ACTIVITY = "start_deep_run"
RUN_TRIGGER_ACTIVITY = "run_airflow_trigger"
RUN_DAG_CALLBACK_ACTIVITY = "run_dag_callback"
ACQUIRE_POOL_SLOT_ACTIVITY = "acquire_pool_slot"
LOAD_PREVIOUS_RUN_ACTIVITY = "load_previous_run"
#: Standalone pools: one workflow per pool name holds its slots (see ``temporal_airflow.workflows.pools``).
POOL_WORKFLOW = "temporal_airflow_pool"
ACQUIRE_STANDALONE_POOL_SLOT_ACTIVITY = "acquire_standalone_pool_slot"
FIND_CLOSED_POOL_HOLDERS_ACTIVITY = "find_closed_pool_holders"
POOL_ACQUIRE_UPDATE = "acquire"
POOL_RELEASE_SIGNAL = "release"
POOL_STATE_QUERY = "state"
#: Sizes of the standalone pools, read by activity workers: ``name=slots,other=slots``.
POOLS_ENV = "TEMPORAL_AIRFLOW_POOLS"
#: Signal both workflows take: a user marked a task instance in Airflow's UI or REST API.
MARK_TASK_SIGNAL = "mark_task"
#: Signal of the deep workflow: its running DagRun was cleared (in part) in Airflow; carries the new clear number.
RUN_CLEARED_SIGNAL = "run_cleared"

#: Default task queues; override with TEMPORAL_WORKFLOW_TASK_QUEUE / TEMPORAL_ACTIVITY_TASK_QUEUE.
DEFAULT_WORKFLOW_TASK_QUEUE = "airflow-workflows"
DEFAULT_ACTIVITY_TASK_QUEUE = "airflow-tasks"
#: An execution of a run continues as new once its scheduling turns have evaluated this many task
#: instances in all (a turn costs about as much as the run has task instances, and a worker that evicts
#: the run replays every turn): a replay stays well under the workflow-task timeout at any run size.
DEFAULT_REPLAY_BUDGET = 1_000_000


def service_task_queue(activity_task_queue: str) -> str:
    """The queue of everything but task tries (DB sync, pool slots, triggers, DAG parsing, callbacks).

    Task tries on ``activity_task_queue`` are limited to a few per worker (each is a process); these are
    short or mostly waiting, and a run's progress depends on them: on the same slots, long tries (a task
    waiting for another DAG's run, say) would starve the very activities that run needs. Activity
    workers poll both queues (``temporal-airflow-activity-worker`` does).
    """
    return f"{activity_task_queue}-service"


def task_limit_pool(dag_id: str, task_id: str) -> str:
    """The standalone pool that holds a task's ``max_active_tis_per_dag`` across all runs of its DAG."""
    return f"task-limit:{dag_id}.{task_id}"


def pool_workflow_id(pool: str) -> str:
    """The id of the workflow holding a standalone pool's slots: one per pool name and namespace."""
    return f"temporal-airflow-pool:{pool}"


#: Error types raised as non-retryable ApplicationErrors.
DAG_IMPORT_ERROR = "DagImportError"
DAG_NOT_FOUND_ERROR = "DagNotFound"
INVALID_CONF_ERROR = "InvalidDagRunConf"
XCOM_TOO_LARGE_ERROR = "XComTooLarge"
#: The task's process died without reporting an outcome (segfault, ``os._exit``, OOM kill): one failed try.
TASK_PROCESS_DIED_ERROR = "TaskProcessDied"
#: The task's pool (Airflow's in deep mode, a configured one standalone) has no room for it now (retried) /
#: can never have (not retried).
POOL_FULL_ERROR = "PoolFull"
POOL_UNAVAILABLE_ERROR = "PoolUnavailable"
#: Airflow's default pool: every task is in it unless it names another; Temporal-run tries take no slots of it.
DEFAULT_POOL = "default_pool"
#: A deferred task's trigger raised instead of yielding an event: the task resumes only to fail.
TRIGGER_FAILED_ERROR = "TriggerFailed"


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


# ---------------------------------------------------------------------------------------------------
# Deep integration: the workflow runs against a real Airflow metadata DB.
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Standalone pools: a workflow per pool holds its slots for every standalone run on the namespace.
# ---------------------------------------------------------------------------------------------------


@dataclass
class PoolHolder:
    """One try holding slots of a standalone pool: the run's workflow execution and the try's id."""

    workflow_id: str
    run_id: str
    #: The try's activity id (``extract#try1``): unique within the run's execution.
    try_id: str
    slots: int = 1


@dataclass
class PoolHolders:
    """Holders of a pool: the ones to look at, or (as the answer) those whose run has closed."""

    holders: list[PoolHolder] = field(default_factory=list)


@dataclass
class PoolState:
    """A pool workflow's input (carried over continue-as-new) and the answer to its ``state`` query."""

    pool: str
    #: Where the workflow runs ``find_closed_pool_holders`` (the queue its first acquisition ran on).
    service_task_queue: str
    #: The size the last acquisition was given (the activity worker's configuration).
    size: int = 0
    holders: list[PoolHolder] = field(default_factory=list)
    #: How often, while the pool has holders, it releases those whose run has closed without releasing.
    check_every_seconds: float = 60.0


@dataclass
class PoolAcquisition:
    """Argument of the pool workflow's ``acquire`` update: the holder and the pool's configured size."""

    holder: PoolHolder
    size: int


@dataclass
class PoolSlotRequest:
    """Input of ``acquire_standalone_pool_slot``: a try's slots of a pool, taken before it starts."""

    pool: str
    holder: PoolHolder
    #: The run's own workflow queue: the pool workflow is started there when it is not running.
    workflow_task_queue: str
    #: A pool the run's DAG defines itself (a task's ``max_active_tis_per_dag`` across runs, see
    #: :func:`task_limit_pool`), with this size; ``None``: a configured pool (``TEMPORAL_AIRFLOW_POOLS``).
    size: int | None = None
