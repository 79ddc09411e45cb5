"""Secure and persistent defaults of the local stack (``temporal-airflow up``, tests, e2e, compose)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from conftest import ROOT
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.local_postgres import LocalPostgres
from temporal_airflow.cli.local_stack import STACK_DEFAULTS, LocalStack, stack_secrets, stack_settings
from temporal_airflow.cli.up import managed_dags_description

FORCED = stack_settings(
    sql_alchemy_conn="c", dags_folder="d", log_folder="l", execution_api_url="e", temporal_address="t"
)


def test_secrets_are_random_per_work_dir_private_and_kept_for_restarts(tmp_path: Path) -> None:
    first = stack_secrets(tmp_path / "a")
    assert set(first) == {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
    assert all(len(value) >= 32 for value in first.values())
    assert stack_secrets(tmp_path / "a") == first
    assert (tmp_path / "a" / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert set(stack_secrets(tmp_path / "b").values()).isdisjoint(first.values())


def test_env_keeps_the_users_settings_but_forces_what_the_stack_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "the-users-own")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/somewhere/else")
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")
    monkeypatch.delenv("AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL", raising=False)
    stack = LocalStack(tmp_path, tmp_path / "dags", postgres=LocalPostgres(tmp_path / "pg"), temporal=DevServer())
    env = stack.env()
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "the-users-own"
    assert env["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "DEBUG"
    assert env["AIRFLOW__API__SECRET_KEY"] == stack_secrets(tmp_path)["AIRFLOW__API__SECRET_KEY"]
    assert env["AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL"] == "5"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://postgres@127.0.0.1:")


def test_compose_file_carries_every_setting_of_the_local_stack(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    settings = set(compose["x-airflow-env"])
    assert settings >= {*FORCED, *STACK_DEFAULTS, *stack_secrets(tmp_path)}
    assert "--db-filename=/var/lib/temporal/temporal.db" in compose["services"]["temporal"]["command"]
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DAGs tagged 'temporal'"),
        ({"TEMPORAL_MANAGED_DAGS": "etl_*, report"}, "DAGs tagged 'temporal' and dag_ids matching etl_*, report"),
        ({"TEMPORAL_MANAGED_TAG": "", "AIRFLOW__TEMPORAL__MANAGED_DAGS": "etl_*"}, "dag_ids matching etl_*"),
        ({"TEMPORAL_MANAGED_DAGS": "x,*"}, "every DAG (TEMPORAL_MANAGED_DAGS=*)"),
        ({"TEMPORAL_MANAGED_TAG": ""}, "no DAG (no TEMPORAL_MANAGED_TAG, no TEMPORAL_MANAGED_DAGS)"),
    ],
)
def test_banner_says_which_dags_run_on_temporal(env: dict[str, str], expected: str) -> None:
    assert managed_dags_description(env) == expected


@pytest.mark.integration
def test_dev_server_with_a_db_file_keeps_its_history_across_restarts(tmp_path: Path) -> None:
    db_file = str(tmp_path / "temporal.db")

    async def start_workflow(address: str) -> None:
        client = await Client.connect(address)
        await client.start_workflow("NoWorkerNeeded", id="kept-across-restarts", task_queue="nobody-polls")

    async def workflow_type(address: str) -> str:
        client = await Client.connect(address)
        return (await client.get_workflow_handle("kept-across-restarts").describe()).workflow_type

    with DevServer(db_file=db_file) as server:
        asyncio.run(_retry(lambda: start_workflow(server.address)))
    with DevServer(db_file=db_file) as server:
        assert asyncio.run(_retry(lambda: workflow_type(server.address))) == "NoWorkerNeeded"


async def _retry(call: Any, attempts: int = 50) -> Any:
    """The dev server listens before its frontend answers: retry the first call a little."""
    for attempt in range(attempts):
        try:
            return await call()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
