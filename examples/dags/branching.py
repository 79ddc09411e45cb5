"""Branching and short-circuit: the branch not taken and everything behind a False short-circuit skip."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"route": "fast"},
    tags=["example", "temporal"],
)
def example_branching():
    @task.branch
    def choose(**context) -> str:
        return "fast_path" if context["params"]["route"] == "fast" else "slow_path"

    fast = EmptyOperator(task_id="fast_path")
    slow = EmptyOperator(task_id="slow_path")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    choose() >> [fast, slow] >> join

    gate_open = ShortCircuitOperator(task_id="gate_open", python_callable=lambda: True)
    gate_closed = ShortCircuitOperator(task_id="gate_closed", python_callable=lambda: False)

    @task
    def after_open() -> str:
        return "ran"

    @task
    def after_closed() -> str:
        return "never runs"

    join >> gate_open >> after_open()
    join >> gate_closed >> after_closed()


example_branching()
