"""Every one of Airflow's 13 trigger rules, fed by a success, a failure and a skip."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException

# rule -> which of the upstream outcomes ("ok", "boom", "skip_me") feed it
RULES = {
    "all_success": ["ok"],
    "all_failed": ["boom"],
    "all_done": ["ok", "boom", "skip_me"],
    "all_done_min_one_success": ["ok", "boom"],
    "all_done_setup_success": ["ok", "boom"],
    "all_skipped": ["skip_me"],
    "one_success": ["ok", "boom"],
    "one_failed": ["ok", "boom"],
    "one_done": ["ok", "skip_me"],
    "none_failed": ["ok", "skip_me"],
    "none_failed_min_one_success": ["ok", "skip_me"],
    "none_skipped": ["ok", "boom"],
    "always": ["boom"],
}


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["example", "temporal"])
def example_trigger_rules():
    @task
    def ok() -> str:
        return "fine"

    @task
    def boom() -> None:
        raise ValueError("this task fails on purpose")

    @task
    def skip_me() -> None:
        raise AirflowSkipException("skipped on purpose")

    upstream = {"ok": ok(), "boom": boom(), "skip_me": skip_me()}
    for rule, sources in RULES.items():
        target = EmptyOperator(task_id=f"rule_{rule}", trigger_rule=rule)
        for source in sources:
            upstream[source] >> target
    # Default rule (all_success) behind a failure and behind a skip.
    upstream["boom"] >> EmptyOperator(task_id="after_failure")
    upstream["skip_me"] >> EmptyOperator(task_id="after_skip")


example_trigger_rules()
