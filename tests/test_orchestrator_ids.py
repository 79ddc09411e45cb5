"""Workflow ids of managed runs: readable, one per run and clear number, never shared by two runs."""

from __future__ import annotations

import pytest

from temporal_airflow.orchestrator.bridge import workflow_id
from temporal_airflow.orchestrator.ids import MAX_ID_BYTES, RunRef


def test_the_id_names_the_dag_the_run_and_the_clear_number() -> None:
    assert (
        workflow_id("etl", "manual__2025-01-01T00:00:00+00:00")
        == "airflow:etl:manual__2025-01-01T00:00:00+00:00:clear0"
    )
    assert workflow_id("etl", "scheduled__x", 3) == "airflow:etl:scheduled__x:clear3"
    assert RunRef("etl", "scheduled__x", 3).workflow_id == workflow_id("etl", "scheduled__x", 3)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a-b", "c"), ("a", "b-c")),  # the old `airflow-{dag_id}-{run_id}` gave both `airflow-a-b-c`
        (("a:b", "c"), ("a", "b:c")),
        (("a", "b:clear1"), ("a", "b")),
        (("a%3Ab", "c"), ("a:b", "c")),
    ],
)
def test_different_runs_never_share_an_id(one: tuple[str, str], other: tuple[str, str]) -> None:
    assert workflow_id(*one) != workflow_id(*other)
    assert workflow_id(*one, 1) != workflow_id(*other, 1) != workflow_id(*other, 0)


def test_non_ascii_names_stay_readable() -> None:
    assert workflow_id("données_quotidiennes", "manual__été") == "airflow:données_quotidiennes:manual__été:clear0"


def test_an_id_beyond_temporals_limit_keeps_a_readable_prefix_and_hashes_the_names() -> None:
    long_run = "r" * 240
    wid = workflow_id("日" * 250, long_run, 2)
    assert len(wid.encode()) <= MAX_ID_BYTES
    assert wid.startswith("airflow:" + "日" * 100 + ":sha256-") and wid.endswith(":clear2")
    assert wid != workflow_id("日" * 250, long_run + "x", 2)
