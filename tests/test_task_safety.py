"""What a worker refuses or hides: DAG files outside its DAG folders, secrets in task errors, and state
updates the Execution API failed to record."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client

from conftest import SERVICE_PASSWORD, TEST_DAGS, DagRunner
from temporal_airflow.activities.dag_loading import ChildError, serialize_dag_file
from temporal_airflow.activities.dag_paths import (
    CHECK_ENV,
    DAG_OUTSIDE_FOLDERS_ERROR,
    FOLDERS_ENV,
    DagPathRefused,
    check_dag_path,
)
from temporal_airflow.activities.execution_api import RecordingTransport
from temporal_airflow.activities.execution_api import http as httpx  # the Task SDK's: httpx2 from Airflow 3.4
from temporal_airflow.activities.task_activities import task_log_path
from temporal_airflow.models import ActivityTaskInput, LoadDagFileInput, RunContext

# -- DAG folders ----------------------------------------------------------------------------------------


@pytest.fixture
def dag_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``dags/`` (allowed, with ``ok.py`` and ``sub/nested.py``) next to ``outside/evil.py``."""
    (tmp_path / "dags" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    for path in ("dags/ok.py", "dags/sub/nested.py", "outside/evil.py"):
        (tmp_path / path).write_text("")
    monkeypatch.setenv(FOLDERS_ENV, str(tmp_path / "dags"))
    monkeypatch.delenv(CHECK_ENV, raising=False)
    return tmp_path


@pytest.mark.parametrize("path", ["dags/ok.py", "dags/sub/nested.py", "dags/sub/../ok.py"])
def test_files_inside_the_dag_folders_are_accepted(dag_tree: Path, path: str) -> None:
    check_dag_path(str(dag_tree / path))


def test_a_symlink_inside_the_folders_to_a_file_inside_is_accepted(dag_tree: Path) -> None:
    (dag_tree / "dags" / "alias.py").symlink_to(dag_tree / "dags" / "sub" / "nested.py")
    check_dag_path(str(dag_tree / "dags" / "alias.py"))


@pytest.mark.parametrize("path", ["outside/evil.py", "dags/../outside/evil.py", "dags/sub/../../outside/evil.py"])
def test_files_outside_are_refused_naming_the_path_and_the_folders(dag_tree: Path, path: str) -> None:
    with pytest.raises(DagPathRefused) as err:
        check_dag_path(str(dag_tree / path))
    message = str(err.value)
    assert str(dag_tree / "outside" / "evil.py") in message
    assert str(dag_tree / "dags") in message and FOLDERS_ENV in message


@pytest.mark.parametrize("link", ["file", "folder"])
def test_symlinks_out_of_the_folders_are_refused(dag_tree: Path, link: str) -> None:
    if link == "file":
        (dag_tree / "dags" / "escape.py").symlink_to(dag_tree / "outside" / "evil.py")
        path = dag_tree / "dags" / "escape.py"
    else:
        (dag_tree / "dags" / "escape").symlink_to(dag_tree / "outside")
        path = dag_tree / "dags" / "escape" / "evil.py"
    with pytest.raises(DagPathRefused, match="resolves to"):
        check_dag_path(str(path))


def test_a_prefix_of_a_folder_name_is_not_inside_it(dag_tree: Path) -> None:
    (dag_tree / "dags-evil").mkdir()
    (dag_tree / "dags-evil" / "x.py").write_text("")
    with pytest.raises(DagPathRefused):
        check_dag_path(str(dag_tree / "dags-evil" / "x.py"))


def test_several_folders_are_separated_by_pathsep(dag_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FOLDERS_ENV, os.pathsep.join([str(dag_tree / "dags"), str(dag_tree / "outside")]))
    check_dag_path(str(dag_tree / "outside" / "evil.py"))


def test_the_check_is_off_unless_configured(dag_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FOLDERS_ENV)
    check_dag_path(str(dag_tree / "outside" / "evil.py"))  # the CLI and in-process workers
    monkeypatch.setenv(FOLDERS_ENV, str(dag_tree / "dags"))
    monkeypatch.setenv(CHECK_ENV, "0")
    check_dag_path(str(dag_tree / "outside" / "evil.py"))


def test_a_worker_defaults_to_airflows_dags_folder(dag_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FOLDERS_ENV)
    monkeypatch.setenv(CHECK_ENV, "1")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dag_tree / "dags"))
    check_dag_path(str(dag_tree / "dags" / "ok.py"))
    with pytest.raises(DagPathRefused):
        check_dag_path(str(dag_tree / "outside" / "evil.py"))


def test_parsing_a_dag_outside_is_a_non_retryable_child_error(dag_tree: Path) -> None:
    with pytest.raises(ChildError) as err:
        serialize_dag_file(LoadDagFileInput(dag_path=str(dag_tree / "outside" / "evil.py")))
    assert err.value.kind == DAG_OUTSIDE_FOLDERS_ERROR


# -- state updates --------------------------------------------------------------------------------------


def _state_update(state: str) -> httpx.Request:
    body = json.dumps({"state": state, "end_date": "2025-01-01T00:00:00Z"}).encode()
    return httpx.Request("PATCH", "http://api/task-instances/0193/state", content=body)


class FlakyAPI:
    """Answers state updates with the given failures first, then 204."""

    def __init__(self, *failures: int | Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        assert json.loads(request.content)["state"]  # the body survives every resend
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, json={"detail": "database unavailable"})
        return httpx.Response(204)


@pytest.mark.parametrize(
    "failures", [(500,), (503, 502), (httpx.ConnectError("connection refused"),)], ids=["500", "503-502", "connect"]
)
def test_a_final_state_is_retried_until_it_lands(failures: tuple[int | Exception, ...]) -> None:
    api = FlakyAPI(*failures)
    transport = RecordingTransport(httpx.MockTransport(api), state_retry_seconds=30)
    response = transport.handle_request(_state_update("up_for_retry"))
    assert response.status_code == 204
    assert api.calls == len(failures) + 1
    assert transport.outcome.state == "up_for_retry"
    assert transport.outcome.undelivered_state is None


def test_a_state_never_accepted_is_not_an_outcome() -> None:
    transport = RecordingTransport(httpx.MockTransport(FlakyAPI(*[500] * 100)), state_retry_seconds=0.1)
    assert transport.handle_request(_state_update("success")).status_code == 500
    assert transport.outcome.state is None
    assert transport.outcome.undelivered_state == "success"


def test_client_errors_and_other_calls_are_not_retried() -> None:
    api = FlakyAPI(409)
    transport = RecordingTransport(httpx.MockTransport(api), state_retry_seconds=30)
    assert transport.handle_request(_state_update("success")).status_code == 409
    assert api.calls == 1 and transport.outcome.state is None


# -- secrets in task errors -----------------------------------------------------------------------------

SENSITIVE_VARIABLE = "variable-secret-4e1b9d"


@pytest.mark.integration
async def test_task_errors_reach_history_with_secrets_masked(dag_runner: DagRunner, client: Client) -> None:
    handle = await dag_runner.start(TEST_DAGS / "leaky_errors.py", variables={"service_token": SENSITIVE_VARIABLE})
    result = await handle.result()
    errors = {t.task_id: t.error or "" for t in result.tasks}
    assert result.state == "failed"
    assert "refused with password ***" in errors["quote_connection_password"]
    assert "token *** was rejected" in errors["quote_sensitive_variable"]
    assert SERVICE_PASSWORD not in str(errors)

    history = await handle.fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"refused with password ***" in raw  # the error did reach history, masked
    assert SERVICE_PASSWORD.encode() not in raw
    # The variable itself is in the run's input (it was given to the run); its error text is not.
    assert f"token {SENSITIVE_VARIABLE}".encode() not in raw


@pytest.mark.parametrize("run_id", ["r" * 250, "é" * 200, "manual__2026-01-01T00:00:00+00:00"])
def test_task_log_folders_fit_the_file_system_and_stay_apart(run_id: str) -> None:
    """Airflow allows 250-character ids; its `run_id=…` log folder would pass the 255-byte name limit."""
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def path(run: str) -> Path:
        context = RunContext(dag_id="d" * 250, run_id=run, run_type="manual", run_after=now, start_date=now)
        return Path(task_log_path(ActivityTaskInput("dag.py", "t" * 250, 1, 1, context)))

    here = path(run_id)
    assert all(len(part.encode()) <= 255 for part in here.parts)
    assert here != path(run_id[:-1] + "x")  # a hash of the whole id tells long ids apart
    if len(run_id) < 100:
        assert f"run_id={run_id}" in here.parts  # short ones keep Airflow's own layout


@pytest.mark.parametrize("dag_id", ["données", "数据_pipeline"])
def test_non_ascii_names_reach_the_in_process_execution_api_intact(dag_id: str) -> None:
    """The in-process API is a WSGI app behind httpx: its PATH_INFO is latin-1 text for the raw bytes."""
    seen: list[str] = []

    def app(environ: dict, start_response: object) -> list[bytes]:
        seen.append(environ["PATH_INFO"].encode("latin-1").decode())
        start_response("200 OK", [("Content-Type", "application/json")])  # type: ignore[operator]
        return [b"{}"]

    transport = RecordingTransport(httpx.WSGITransport(app=app))
    with httpx.Client(transport=transport, base_url="http://in-process.invalid") as client:
        assert client.get(f"/xcoms/{dag_id}/run/task/key?map_index=-1").status_code == 200
    assert seen == [f"/xcoms/{dag_id}/run/task/key"]
