"""Reads a variable (from the workflow input) and a connection (from the worker's environment)."""

from __future__ import annotations

import pendulum
from airflow.sdk import BaseHook, Variable, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def secrets_and_vars():
    @task
    def read_variable() -> str:
        return Variable.get("greeting")

    @task
    def read_connection() -> str:
        conn = BaseHook.get_connection("test_service")
        return f"{conn.host}:{conn.port}:{conn.login}:{len(conn.password or '')}"

    read_variable()
    read_connection()


secrets_and_vars()
