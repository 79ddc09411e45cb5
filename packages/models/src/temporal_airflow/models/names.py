"""Names every component must spell alike: workflows, activities, signals, task queues, error types.

A workflow started by the CLI, the orchestrator or a user's client finds its worker by these names, and
activity errors are told apart by their types; renaming one breaks running workflows and recorded
histories. Plain strings and functions of strings only.
"""

from __future__ import annotations

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
