"""Encryption end to end: a standalone run on a real Temporal dev server with the codec on leaves no conf
value, variable, XCom or task error readable in its history; the codec server reads them back."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client

from conftest import TEST_DAGS, Queues
from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
from temporal_airflow.cli.codec_server import TOKEN_ENV
from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.listeners import candidate_port, listens_on
from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
from temporal_airflow.models.codec import ENCODING, KEY_ENV, EncryptionKey, EncryptionSettings
from temporal_airflow.models.converter import data_converter
from temporal_airflow.workflows.worker import create_workflow_worker

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CONF_VALUE = "conf-private-7f3a21"
VARIABLE_VALUE = "variable-private-91c2e4"
XCOM_VALUE = "xcom-private-5d1e0a"  # returned by tests/dags/private_values.py
ERROR_TEXT = "error-private-c8b07f"  # raised by tests/dags/private_values.py
PRIVATE = (CONF_VALUE, VARIABLE_VALUE, XCOM_VALUE, ERROR_TEXT)

CODEC_TOKEN = "codec-token-of-this-test"


@pytest.fixture(scope="module")
def key() -> EncryptionKey:
    return EncryptionKey(os.urandom(32))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def encrypted_client(temporal_server: DevServer, key: EncryptionKey) -> Client:
    converter = data_converter(encryption=EncryptionSettings((key,)))
    return await Client.connect(temporal_server.address, data_converter=converter)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def encrypted_queues(encrypted_client: Client) -> AsyncIterator[Queues]:
    queues = Queues()
    async with (
        create_workflow_worker(encrypted_client, task_queue=queues.workflows),
        create_activity_worker(encrypted_client, task_queue=queues.activities, max_concurrent=2),
        create_service_worker(encrypted_client, task_queue=queues.activities),
    ):
        yield queues


@pytest.fixture(scope="module")
def codec_server(key: EncryptionKey) -> Iterator[str]:
    port = candidate_port()
    env = {**os.environ, KEY_ENV: base64.b64encode(key.secret).decode(), TOKEN_ENV: CODEC_TOKEN}
    command = [str(Path(sys.executable).parent / "temporal-airflow-codec-server"), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, port, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_serving(url: str, port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the codec server started here (not whatever else took the port) answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            probe = httpx.post(f"{url}/decode", json={"payloads": []}, headers={"X-Namespace": "default"})
            if listens_on(process.pid, port) and probe.status_code == 401:  # up, and asking for the token
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"codec server did not serve at {url} (exit code {process.poll()})")


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside ``message`` (history events nest them at many depths)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            children = [value]
        elif field.message_type.GetOptions().map_entry:
            children = list(value.values())
        else:
            children = list(value)
        for child in children:
            if isinstance(child, Message):
                yield from payloads_in(child)


async def test_history_holds_ciphertext_only_and_the_codec_server_reads_it(
    encrypted_client: Client, encrypted_queues: Queues, codec_server: str
) -> None:
    handle = await encrypted_client.start_workflow(
        STANDALONE_WORKFLOW,
        DagExecutionInput(
            dag_path=str(TEST_DAGS / "private_values.py"),
            conf={"token": CONF_VALUE},
            variables={"tenant": VARIABLE_VALUE},
            activity_task_queue=encrypted_queues.activities,
        ),
        id=f"test-encrypted-{uuid.uuid4().hex[:8]}",
        task_queue=encrypted_queues.workflows,
        result_type=DagExecutionResult,
    )
    result = await handle.result()  # decrypted by the client's converter
    tasks = {t.task_id: t for t in result.tasks}
    assert result.state == "failed"
    assert tasks["consume"].xcoms[0].value_json == f'"{XCOM_VALUE}|{CONF_VALUE}|{VARIABLE_VALUE}"'
    assert ERROR_TEXT in (tasks["fail"].error or "")

    history = await handle.fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    raw += history.to_json().encode()
    for value in PRIVATE:
        assert value.encode() not in raw, value
        assert base64.b64encode(value.encode()) not in raw, value
    payloads = [p for event in history.events for p in payloads_in(event)]
    assert payloads and all(p.metadata["encoding"] == ENCODING for p in payloads)

    async with httpx.AsyncClient(base_url=codec_server) as http:
        response = await http.post(
            "/decode",
            content=json_format.MessageToJson(Payloads(payloads=payloads)),
            headers={
                "Content-Type": "application/json",
                "X-Namespace": "default",
                "Authorization": f"Bearer {CODEC_TOKEN}",
            },
        )
    assert response.status_code == 200
    decoded = b"".join(p.data for p in json_format.Parse(response.text, Payloads()).payloads)
    for value in PRIVATE:
        assert value.encode() in decoded, value
