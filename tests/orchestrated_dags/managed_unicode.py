"""Tagged `temporal`, with a non-ASCII dag_id (Airflow allows any word character)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="managed_données",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["temporal"],
)
def managed_unicode():
    @task
    def sample() -> str:
        return "réussi"

    @task
    def check(value: str) -> None:
        assert value == "réussi", value

    check(sample())


managed_unicode()
