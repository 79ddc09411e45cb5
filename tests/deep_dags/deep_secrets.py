"""Reads a connection and a variable that live in Airflow's metadata DB, through the normal hook path."""

from __future__ import annotations

import pendulum
from airflow.sdk import BaseHook, Variable, dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def deep_secrets():
    @task
    def describe_service() -> str:
        conn = BaseHook.get_connection("deep_service")
        greeting = Variable.get("deep_greeting")
        return f"{greeting} {conn.login}@{conn.host}:{conn.port} (password length {len(conn.password or '')})"

    describe_service()


deep_secrets()
