"""Deep mode semantics beyond a plain chain: mapping over runtime values (second order), a deferrable
sensor and a reschedule-mode sensor, all seen in Airflow's DB as the stock scheduler would leave them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import dag, task


def _third_poke(**context: Any) -> bool:
    with open(context["dag_run"].conf["counter"], "a+") as fh:
        fh.write("poke\n")
        fh.seek(0)
        return fh.read().count("poke") >= 3


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def deep_semantics():
    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return x * 2

    @task
    def plus_one(x: int) -> int:
        return x + 1

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(plus_one.expand(x=double.expand(x=numbers())))
    TimeDeltaSensor(task_id="deferred_wait", delta=timedelta(seconds=3), deferrable=True)
    PythonSensor(task_id="poke_wait", python_callable=_third_poke, mode="reschedule", poke_interval=1, timeout=120)


deep_semantics()
