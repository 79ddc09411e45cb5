"""A run whose conf, variable, XCom and task error must never be readable in Temporal's history."""

from __future__ import annotations

import pendulum
from airflow.sdk import Variable, dag, get_current_context, task

XCOM_VALUE = "xcom-private-5d1e0a"
ERROR_TEXT = "error-private-c8b07f"


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), default_args={"retries": 0})
def private_values():
    @task
    def produce() -> str:
        return XCOM_VALUE

    @task
    def consume(value: str) -> str:
        conf = get_current_context()["dag_run"].conf or {}
        return f"{value}|{conf['token']}|{Variable.get('tenant')}"

    @task
    def fail() -> None:
        raise RuntimeError(ERROR_TEXT)

    consume(produce())
    fail()


private_values()
