"""Standalone pools: a workflow per pool holds its slots for every standalone run on the namespace."""

from __future__ import annotations

from dataclasses import dataclass, field


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
