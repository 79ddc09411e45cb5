"""BashOperator with Jinja templating: logical date, params, dag_run.conf and an env var."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"greeting": "hello"},
    tags=["example", "temporal"],
)
def example_bash_templating():
    greet = BashOperator(
        task_id="greet",
        bash_command="echo \"{{ params.greeting }} {{ dag_run.conf.get('name', 'world') }} on {{ ds }}\"",
    )
    count = BashOperator(
        task_id="count_words",
        bash_command='echo "{{ ti.xcom_pull(task_ids=\'greet\') }}" | wc -w | tr -d " "',
    )
    env = BashOperator(
        task_id="env_and_interval",
        bash_command='echo "$RUN_ID|{{ data_interval_start is not none }}"',
        env={"RUN_ID": "{{ run_id }}"},
    )
    greet >> count >> env


example_bash_templating()
