"""What an Airflow user sees of Temporal-executed runs: REST API, Airflow UI (headless Chromium), Temporal."""

from __future__ import annotations

import urllib.error

from playwright.sync_api import Page, expect
from temporalio.client import WorkflowExecutionStatus

from e2e_harness import Deployment, eventually, screenshot
from e2e_ui import grid_cells_with_state, run_url, task_row, task_url, wait_for_text
from temporal_airflow.orchestrator.bridge import workflow_id


def test_rest_triggered_run_shows_live_states_in_rest_and_ui(deployment: Deployment, page: Page) -> None:
    api = deployment.api
    run_id = api.trigger("e2e_pipeline", {"seconds": 20})

    def transform_running() -> dict | None:
        tis = api.task_instances("e2e_pipeline", run_id)
        return tis if tis["transform"]["state"] == "running" else None

    live = eventually(transform_running, 180, "`transform` running")
    assert live["extract"]["state"] == "success"
    assert live["transform"]["try_number"] == 1 and live["transform"]["start_date"]
    assert deployment.run_state("e2e_pipeline", run_id) == "running"
    assert deployment.workflow_status("e2e_pipeline", run_id) == WorkflowExecutionStatus.RUNNING

    url = run_url(deployment.ui_url, "e2e_pipeline", run_id)
    wait_for_text(page, url, {"extract": "Success", "transform": "Running"}, timeout=60)
    expect(page.get_by_text("Running").first).to_be_visible()
    screenshot(page, "run-live")

    assert deployment.wait_for_run_state("e2e_pipeline", run_id, {"success", "failed"}) == "success"
    wait_for_text(page, url, {"extract": "Success", "transform": "Success", "load": "Success"})
    tasks = ["extract", "transform", "load"]
    assert grid_cells_with_state(page, run_id, tasks) == tasks
    wid = workflow_id("e2e_pipeline", run_id)
    expect(page.get_by_text("Runs on Temporal: workflow")).to_be_visible()
    expect(page.get_by_text(wid).first).to_be_visible()
    screenshot(page, "run-success")

    temporal_link = page.get_by_role("link", name="Open in the Temporal UI").get_attribute("href")
    assert temporal_link
    page.goto(temporal_link)
    expect(page.get_by_text(wid).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Completed").first).to_be_visible()
    screenshot(page, "temporal-ui-workflow")
    # The timeline names each activity by its task (the activity's summary), not `run_airflow_task`.
    expect(page.get_by_text("transform (try 1)").first).to_be_visible(timeout=30_000)
    screenshot(page, "temporal-ui-timeline")
    assert {t: ti["state"] for t, ti in api.task_instances("e2e_pipeline", run_id).items()} == {
        "extract": "success",
        "transform": "success",
        "load": "success",
    }
    assert deployment.workflow_status("e2e_pipeline", run_id) == WorkflowExecutionStatus.COMPLETED
    assert deployment.workflow_executions("e2e_pipeline", run_id) == 1


def test_xcoms_are_visible_in_rest_and_in_the_xcom_tab(deployment: Deployment, page: Page) -> None:
    api = deployment.api
    run_id = api.trigger("e2e_pipeline", {"seconds": 0})
    assert deployment.wait_for_run_state("e2e_pipeline", run_id, {"success", "failed"}) == "success"
    assert api.xcom("e2e_pipeline", run_id, "extract") == [3, 4, 5]
    assert api.xcom("e2e_pipeline", run_id, "transform") == 50
    assert api.xcom("e2e_pipeline", run_id, "load") == "loaded 50"

    page.goto(task_url(deployment.ui_url, "e2e_pipeline", run_id, "load", "xcom"))
    row = page.get_by_role("row").filter(has_text="return_value")
    expect(row).to_contain_text("loaded 50")
    screenshot(page, "xcom-tab")


def test_connection_created_via_rest_is_used_by_a_task(deployment: Deployment) -> None:
    api = deployment.api
    password = "e2e-conn-pa55word-must-stay-secret"
    connection = {
        "connection_id": "e2e_api",
        "conn_type": "http",
        "host": "api.example.internal",
        "login": "robot",
        "port": 8443,
        "password": password,
    }
    try:
        api.request("POST", "connections", connection)
    except urllib.error.HTTPError as error:
        if error.code != 409:  # already there from an earlier run against the same deployment
            raise
    run_id = api.trigger("e2e_connection")
    assert deployment.wait_for_run_state("e2e_connection", run_id, {"success", "failed"}) == "success"
    assert api.xcom("e2e_connection", run_id, "call_api") == "http://robot@api.example.internal:8443"
    assert password not in deployment.workflow_history_json("e2e_connection", run_id)


def test_failing_task_fails_the_run_with_its_error_in_the_log_view(deployment: Deployment, page: Page) -> None:
    api = deployment.api
    run_id = api.trigger("e2e_failing")
    assert deployment.wait_for_run_state("e2e_failing", run_id, {"success", "failed"}) == "failed"
    tis = api.task_instances("e2e_failing", run_id)
    assert (tis["prepare"]["state"], tis["explode"]["state"]) == ("success", "failed")
    assert "ValueError: e2e boom: the warehouse rejected the load" in api.task_log("e2e_failing", run_id, "explode")
    assert deployment.workflow_status("e2e_failing", run_id) == WorkflowExecutionStatus.COMPLETED

    wait_for_text(page, run_url(deployment.ui_url, "e2e_failing", run_id), {"prepare": "Success", "explode": "Failed"})
    page.goto(task_url(deployment.ui_url, "e2e_failing", run_id, "explode"))
    expect(page.get_by_text("ValueError: e2e boom: the warehouse rejected the load").first).to_be_visible()
    screenshot(page, "failed-task-log")


def test_marking_a_run_failed_in_the_ui_cancels_its_workflow(deployment: Deployment, page: Page) -> None:
    api = deployment.api
    run_id = api.trigger("e2e_long")
    eventually(
        lambda: api.task_instances("e2e_long", run_id)["wait_forever"]["state"] == "running", 180, "the task running"
    )
    page.goto(run_url(deployment.ui_url, "e2e_long", run_id))
    expect(task_row(page, "wait_forever")).to_contain_text("Running", timeout=30_000)
    page.get_by_role("button", name="Mark Dag Run as...").click()
    page.get_by_role("menuitem", name="Failed").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()

    eventually(
        lambda: deployment.workflow_status("e2e_long", run_id) == WorkflowExecutionStatus.CANCELED,
        120,
        "the workflow to be cancelled",
    )
    assert deployment.run_state("e2e_long", run_id) == "failed"
    eventually(
        lambda: api.task_instances("e2e_long", run_id)["wait_forever"]["state"] != "running",
        60,
        "the cancelled task to stop running",
    )


def test_scheduled_run_executes_on_its_own(deployment: Deployment) -> None:
    dag_id = "e2e_scheduled"

    def scheduled_success() -> dict | None:
        runs = [run for run in deployment.api.runs(dag_id) if run["run_type"] == "scheduled"]
        return next((run for run in runs if run["state"] == "success"), None)

    run = eventually(scheduled_success, 240, f"a scheduled run of {dag_id} to succeed", interval=2)
    assert deployment.api.xcom(dag_id, run["dag_run_id"], "tick") == run["dag_run_id"]
    assert deployment.workflow_status(dag_id, run["dag_run_id"]) == WorkflowExecutionStatus.COMPLETED
