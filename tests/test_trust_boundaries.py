"""What a worker refuses to do for whoever can start workflows or activities in the namespace, and what
task code cannot see (issue 22): triggers are Airflow ``BaseTrigger`` classes from allowed modules only,
stored XComs are encrypted and verified, and task processes get no Temporal or encryption secrets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from conftest import TEST_DAGS, DagRunner, Queues, states
from temporal_airflow.activities.trigger_classes import TRIGGER_REFUSED, TriggerRefused, trigger_class
from temporal_airflow.activities.xcom_refs import STORED_XCOM_REFUSED_ERROR, StoredXComRefused, XComRefs
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.models import (
    RUN_TRIGGER_ACTIVITY,
    ActivityTaskInput,
    DagExecutionResult,
    Deferral,
    RunContext,
    TriggerInput,
    XComEntry,
)

pytestmark = pytest.mark.integration

PROBE = TEST_DAGS / "deferral_probe.py"


# -- Triggers: only BaseTrigger classes from allowed modules ---------------------------------------------


@workflow.defn(name="hostile-trigger", sandboxed=False)
class HostileTrigger:
    """A hand-made workflow, not the project's: it schedules ``run_airflow_trigger`` with its own input."""

    @workflow.run
    async def run(self, args: list) -> str:
        trigger_input, queue = args
        return str(
            await workflow.execute_activity(
                RUN_TRIGGER_ACTIVITY,
                trigger_input,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=2),
            )
        )


def _trigger_input(classpath: str, kwargs: dict) -> TriggerInput:
    from airflow.sdk.serde import serialize

    now = datetime.now(UTC)
    run = RunContext(
        dag_id="custom_trigger", run_id=f"manual__{uuid.uuid4().hex}", run_type="manual", run_after=now, start_date=now
    )
    task = ActivityTaskInput(dag_path=str(PROBE), task_id="wait", try_number=1, max_tries=0, run=run)
    deferral = Deferral(classpath=classpath, trigger_kwargs=serialize(kwargs), next_method="execute_complete")  # type: ignore[arg-type]
    return TriggerInput(task=task, deferral=deferral)


async def test_a_hand_made_trigger_naming_any_callable_is_refused_and_nothing_runs(
    client: Client, queues: Queues, workers: None, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    trigger_input = _trigger_input("subprocess.getoutput", {"cmd": f"touch {marker}"})
    queue = f"hostile-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[HostileTrigger]):
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                "hostile-trigger",
                [trigger_input, queues.activities],
                id=f"hostile-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=120),
            )
    assert not marker.exists()  # the command never ran
    activity_error = failed.value.cause
    cause = activity_error.__cause__ if activity_error else None  # the ApplicationError
    assert TRIGGER_REFUSED in str(cause) and "subprocess.getoutput" in str(cause)
    assert getattr(cause, "non_retryable", False)


@pytest.mark.parametrize(
    "classpath",
    [
        "subprocess.getoutput",
        "os.system",
        "builtins.eval",
        "airflow.models.variable.Variable",  # allowed module, not a trigger
        "airflow.providers.standard.triggers.temporal.timezone",  # allowed module, a module not a class
        "getoutput",
    ],
)
def test_only_trigger_classes_from_allowed_modules_are_built(classpath: str) -> None:
    with pytest.raises(TriggerRefused, match=TRIGGER_REFUSED):
        trigger_class(classpath, str(PROBE))


def test_airflow_provider_and_dag_folder_triggers_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    assert trigger_class("airflow.providers.standard.triggers.temporal.DateTimeTrigger", None) is DateTimeTrigger
    from temporal_airflow.activities.dag_loading import load_dag

    load_dag(str(PROBE), "custom_trigger")
    module = next(name for name, loaded in list(sys.modules.items()) if getattr(loaded, "__file__", "") == str(PROBE))
    assert trigger_class(f"{module}.FileTrigger", str(PROBE)).__name__ == "FileTrigger"
    # A DAG-folder module is allowed only from inside the worker's DAG folders.
    monkeypatch.setenv("TEMPORAL_AIRFLOW_DAG_FOLDERS", str(PROBE.parent.parent / "orchestrated_dags"))
    with pytest.raises(TriggerRefused):
        trigger_class(f"{module}.FileTrigger", str(PROBE))


# -- Stored XComs: through the codec, verified on read, private files ------------------------------------

XCOM_MARKER = "PLAINTEXT-XCOM-MARKER-"
SECRET_XCOM_DAG = f"""
import os, time
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), params={{"gate": ""}})
def secret_xcom():
    @task
    def big() -> str:
        return {XCOM_MARKER!r} * 500

    @task
    def gate(**context) -> None:
        path = context["params"]["gate"]
        if path:
            open(path + ".reached", "w").close()
            while not os.path.exists(path):
                time.sleep(0.2)

    @task
    def use(value: str) -> int:
        return len(value)

    value = big()
    waits = gate()
    value >> waits >> use(value)

secret_xcom()
"""


@contextlib.asynccontextmanager
async def encrypted_stack(server_address: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DagRunner]:
    """Workers and a client of the session's server, all with an encryption key, on queues of their own."""
    from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.workflows.worker import create_workflow_worker

    monkeypatch.setenv("TEMPORAL_AIRFLOW_ENCRYPTION_KEY", base64.b64encode(os.urandom(32)).decode())
    client = await connect_client(server_address)
    queues = Queues()
    async with (
        create_workflow_worker(client, task_queue=queues.workflows),
        create_activity_worker(client, task_queue=queues.activities, max_concurrent=2),
        create_service_worker(client, task_queue=queues.activities),
    ):
        yield DagRunner(client, queues)


def _store_files(before: frozenset[Path] = frozenset()) -> frozenset[Path]:
    """The payload store's files, except those in ``before``."""
    root = Path(os.environ["TEMPORAL_AIRFLOW_PAYLOAD_STORAGE"])
    return frozenset(p for p in root.rglob("*") if p.is_file()) - before


async def test_a_big_xcom_is_stored_encrypted_in_a_private_file(
    temporal_server: DevServer, workers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag_file = tmp_path / "secret_xcom.py"
    dag_file.write_text(SECRET_XCOM_DAG)
    before = _store_files()
    async with encrypted_stack(temporal_server.address, monkeypatch) as runner:
        result = await asyncio.wait_for(runner.run(dag_file), timeout=300)
    assert states(result) == {"big": "success", "gate": "success", "use": "success"}, result.tasks
    use = next(t for t in result.tasks if t.task_id == "use")
    assert json.loads(use.xcoms[0].value_json) == len(XCOM_MARKER) * 500
    big = next(t for t in result.tasks if t.task_id == "big")
    assert big.xcoms[0].value_ref is not None and XCOM_MARKER not in big.xcoms[0].value_ref
    files = _store_files(before)
    assert files, "the big XCom was not stored"
    for path in files:
        assert XCOM_MARKER.encode() not in path.read_bytes(), f"{path} holds the XCom in clear"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, oct(path.parent.stat().st_mode)


async def test_a_tampered_stored_xcom_fails_the_reading_try_clearly(
    temporal_server: DevServer, workers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag_file = tmp_path / "secret_xcom.py"
    dag_file.write_text(SECRET_XCOM_DAG)
    gate = tmp_path / "gate"
    before = _store_files()
    async with encrypted_stack(temporal_server.address, monkeypatch) as runner:
        handle = await runner.start(dag_file, conf={"gate": str(gate)})
        for _ in range(600):
            if Path(f"{gate}.reached").exists():
                break
            await asyncio.sleep(0.2)
        stored_files = _store_files(before)  # big's value, written before gate started
        assert len(stored_files) == 1, stored_files
        [stored] = stored_files
        data = bytearray(stored.read_bytes())
        data[-1] ^= 0xFF
        stored.write_bytes(bytes(data))
        gate.touch()
        result: DagExecutionResult = await asyncio.wait_for(handle.result(), timeout=300)
    use = next(t for t in result.tasks if t.task_id == "use")
    assert (use.state, use.try_number) == ("failed", 1), use
    assert use.error is not None and STORED_XCOM_REFUSED_ERROR in use.error and "altered or swapped" in use.error


async def test_a_forged_reference_is_refused_when_references_are_sealed(tmp_path: Path) -> None:
    from temporal_airflow.models.codec import EncryptionCodec, EncryptionKey
    from temporal_airflow.models.converter import LocalFileStorageDriver

    refs = XComRefs(LocalFileStorageDriver(tmp_path), EncryptionCodec((EncryptionKey(os.urandom(32)),)))
    forged = json.dumps({"driver": "local-file", "claim": {"sha256": "0" * 64}})
    entry = XComEntry(task_id="t", key="return_value", value_json="", value_ref=forged)
    with pytest.raises(StoredXComRefused, match="did not seal"):
        await refs.resolve([entry])


# -- Task code does not get the worker's secrets ---------------------------------------------------------

WORKER_SECRETS = {
    "TEMPORAL_AIRFLOW_ENCRYPTION_KEY": "a-key-for-the-worker-only",
    "TEMPORAL_AIRFLOW_ENCRYPTION_KEY_FILE": "/secrets/key",
    "TEMPORAL_API_KEY": "temporal-cloud-api-key",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "/secrets/client.key",
    "TEMPORAL_TLS_CLIENT_CERT_DATA": "---cert---",
    "TEMPORAL_AIRFLOW_CODEC_TOKEN": "codec-bearer-token",
    "TEMPORAL_AIRFLOW_CODEC_TOKEN_FILE": "/secrets/codec-token",
    "TEMPORAL_GRPC_META_AUTHORIZATION": "Bearer x",
    "MY_DEPLOYMENT_SECRET": "excluded by the operator",
}
ENV_DAG = """
import json, os
import pendulum
from airflow.sdk import dag, task

def _callback(context):
    with open(context["dag_run"].conf["callback_out"], "w") as fh:
        json.dump(sorted(os.environ), fh)

@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), on_success_callback=_callback)
def task_environment():
    @task
    def environment() -> list:
        return sorted(os.environ)

    environment()

task_environment()
"""


async def test_task_code_does_not_see_the_workers_secrets(
    dag_runner: DagRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporal_airflow.activities.task_host_client import task_host

    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TEMPORAL_AIRFLOW_TASK_ENV_EXCLUDE", "MY_DEPLOYMENT_*")
    monkeypatch.setenv("TEMPORAL_AIRFLOW_CHECK_ENV_PROBE", "visible")  # an ordinary setting stays
    dag_file = tmp_path / "task_environment.py"
    dag_file.write_text(ENV_DAG)
    callback_out = tmp_path / "callback_env.json"
    host = task_host()
    await host.stop()  # the next try starts a task host from the worker's environment as it is now
    try:
        result = await asyncio.wait_for(dag_runner.run(dag_file, conf={"callback_out": str(callback_out)}), 300)
    finally:
        await host.stop()  # later tests get a host without these variables
    assert states(result) == {"environment": "success"}, result.tasks
    seen = set(json.loads(result.tasks[0].xcoms[0].value_json))
    assert "TEMPORAL_AIRFLOW_CHECK_ENV_PROBE" in seen and "AIRFLOW_CONN_TEST_SERVICE" in seen
    assert all(os.environ[name] == value for name, value in WORKER_SECRETS.items())  # the worker has them
    assert not seen & set(WORKER_SECRETS), seen & set(WORKER_SECRETS)
    callback_seen = set(json.loads(callback_out.read_text()))
    assert "TEMPORAL_AIRFLOW_CHECK_ENV_PROBE" in callback_seen
    assert not callback_seen & set(WORKER_SECRETS), callback_seen & set(WORKER_SECRETS)


@pytest.mark.parametrize(
    ("name", "hidden"),
    [
        ("TEMPORAL_API_KEY", True),
        ("TEMPORAL_TLS_CLIENT_KEY_DATA", True),
        ("TEMPORAL_ADDRESS", True),
        ("TEMPORAL_AIRFLOW_ENCRYPTION_KEY", True),
        ("TEMPORAL_AIRFLOW_CODEC_TOKEN_FILE", True),
        ("TEMPORAL_AIRFLOW_SOME_NEW_SECRET", True),
        ("MY_DEPLOYMENT_SECRET", True),
        ("TEMPORAL_AIRFLOW_DAG_FOLDERS", False),
        ("TEMPORAL_AIRFLOW_TASK_LOG_LEVEL", False),
        ("AIRFLOW_CONN_TEST_SERVICE", False),
        ("PATH", False),
    ],
)
def test_which_variables_stay_with_the_worker(name: str, hidden: bool) -> None:
    from temporal_airflow.activities.task_env import EXCLUDE_ENV, task_environment

    environ = {name: "x", EXCLUDE_ENV: "MY_DEPLOYMENT_*"}
    assert (name not in task_environment(environ)) is hidden


def test_the_local_store_writes_private_files_and_checks_them_on_read(tmp_path: Path) -> None:
    from temporalio.api.common.v1 import Payload

    from temporal_airflow.models.converter import LocalFileStorageDriver, StoredPayloadAltered

    driver = LocalFileStorageDriver(tmp_path / "store")
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"value"')
    [claim] = asyncio.run(driver.store(None, [payload]))  # type: ignore[arg-type]
    path = driver._path(claim.claim_data["sha256"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 == stat.S_IMODE((tmp_path / "store").stat().st_mode)
    assert asyncio.run(driver.retrieve(None, [claim])) == [payload]  # type: ignore[arg-type]
    other = tmp_path / "other"
    other.write_bytes(Payload(data=b'"swapped"').SerializeToString())
    path.unlink()
    path.write_bytes(other.read_bytes())
    with pytest.raises(StoredPayloadAltered, match="altered or swapped"):
        asyncio.run(driver.retrieve(None, [claim]))  # type: ignore[arg-type]
    path.unlink()
    path.symlink_to(other)
    with pytest.raises(OSError):
        asyncio.run(driver.retrieve(None, [claim]))  # type: ignore[arg-type]
