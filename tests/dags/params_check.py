from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    params={"count": Param(3, type="integer")},
)
def params_check():
    @task
    def double(**context) -> int:
        return context["params"]["count"] * 2

    double()


params_check()
