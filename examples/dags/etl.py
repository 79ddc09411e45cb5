"""ETL with TaskFlow XCom passing, a setup/teardown pair and a task group."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task, task_group


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False, tags=["example", "temporal"])
def example_etl():
    @task
    def create_workspace() -> str:
        return "workspace-1"

    @task
    def extract() -> list[dict]:
        return [
            {"city": "Oslo", "temp_c": 4.5},
            {"city": "Lima", "temp_c": 19.0},
            {"city": "Pune", "temp_c": 31.5},
        ]

    @task_group
    def transform(rows):
        @task
        def to_fahrenheit(rows: list[dict]) -> list[dict]:
            return [{**r, "temp_f": round(r["temp_c"] * 9 / 5 + 32, 1)} for r in rows]

        @task
        def hottest(rows: list[dict]) -> str:
            return max(rows, key=lambda r: r["temp_c"])["city"]

        converted = to_fahrenheit(rows)
        return {"rows": converted, "hottest": hottest(converted)}

    @task
    def load(result: dict, **context) -> dict:
        # xcom_pull from a task two levels up, not a direct upstream.
        raw = context["ti"].xcom_pull(task_ids="extract")
        return {"loaded": len(result["rows"]), "hottest": result["hottest"], "raw_rows": len(raw)}

    @task
    def remove_workspace(name: str) -> None:
        print(f"removing {name}")

    workspace = create_workspace()
    loaded = load(transform(extract()))
    workspace >> loaded >> remove_workspace(workspace).as_teardown(setups=workspace)


example_etl()
