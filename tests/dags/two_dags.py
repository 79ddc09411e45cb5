from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for name in ("first_dag", "second_dag"):
    with DAG(name, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        EmptyOperator(task_id="noop")
