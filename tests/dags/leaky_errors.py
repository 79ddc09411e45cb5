"""Tasks whose errors quote a connection password and a sensitive variable (masked before history)."""

from __future__ import annotations

import pendulum
from airflow.sdk import BaseHook, Variable, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), default_args={"retries": 0})
def leaky_errors():
    @task
    def quote_connection_password() -> None:
        conn = BaseHook.get_connection("test_service")
        raise ConnectionError(f"login to {conn.host} refused with password {conn.password}")

    @task
    def quote_sensitive_variable() -> None:
        raise PermissionError(f"token {Variable.get('service_token')} was rejected")

    quote_connection_password()
    quote_sensitive_variable()


leaky_errors()
