"""A producer whose task updates an asset, and a consumer scheduled on that asset (both run on Temporal)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

REPORT = Asset("file:///tmp/temporal-airflow-conformance/report.csv")


@task(outlets=[REPORT])
def write_report() -> str:
    return "written"


@task
def read_report(**context) -> list[str]:
    return [event.asset.uri for event in context["triggering_asset_events"][REPORT]]


with DAG("asset_producer", schedule=None, start_date=datetime(2024, 1, 1)):
    write_report()

with DAG("asset_consumer", schedule=[REPORT], start_date=datetime(2024, 1, 1)):
    read_report()
