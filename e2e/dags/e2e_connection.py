"""Uses a connection created through Airflow's REST API."""

from __future__ import annotations

import pendulum
from airflow.sdk import BaseHook, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["temporal"])
def e2e_connection():
    @task
    def call_api() -> str:
        conn = BaseHook.get_connection("e2e_api")
        return f"{conn.conn_type}://{conn.login}@{conn.host}:{conn.port}"

    call_api()


e2e_connection()
