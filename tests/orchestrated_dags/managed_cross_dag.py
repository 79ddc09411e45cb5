"""Tagged `temporal`: operators that reach other DAG runs through Airflow's DB, run on Temporal.

`trigger` starts a `managed_chain` run with this run's logical date and waits for it to succeed (polling);
`trigger_deferred` does the same for a second run, deferring on Airflow's DagStateTrigger while it waits;
`sensor` (ExternalTaskSensor) waits for the first child's `third` task; `latest_only` lets a manual run
through, and `after` runs last.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.latest_only import LatestOnlyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import dag


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["temporal"])
def managed_cross_dag():
    trigger = TriggerDagRunOperator(
        task_id="trigger",
        trigger_dag_id="managed_chain",
        trigger_run_id="{{ run_id }}__child",
        logical_date="{{ logical_date }}",
        conf={"seconds": 0},
        wait_for_completion=True,
        poke_interval=2,
    )
    trigger_deferred = TriggerDagRunOperator(
        task_id="trigger_deferred",
        trigger_dag_id="managed_chain",
        trigger_run_id="{{ run_id }}__deferred_child",
        logical_date="{{ logical_date.add(seconds=1) }}",
        conf={"seconds": 0},
        wait_for_completion=True,
        poke_interval=2,
        deferrable=True,
    )
    sensor = ExternalTaskSensor(
        task_id="sensor",
        external_dag_id="managed_chain",
        external_task_id="third",
        poke_interval=2,
        timeout=300,
        mode="reschedule",
    )
    latest_only = LatestOnlyOperator(task_id="latest_only")
    after = EmptyOperator(task_id="after")
    [trigger >> sensor, trigger_deferred] >> latest_only >> after


managed_cross_dag()
