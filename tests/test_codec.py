"""The payload encryption codec, its configuration, and the codec server's HTTP API (no Temporal server)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from temporal_airflow.cli.codec_server import TOKEN_ENV, TOKEN_FILE_ENV, CodecAccess, create_app
from temporal_airflow.cli.codec_server import main as codec_server_main
from temporal_airflow.models.codec import (
    ENCODING,
    KEY_ENV,
    KEY_FILE_ENV,
    KEY_ID_METADATA,
    DecryptionError,
    EncryptionCodec,
    EncryptionKey,
    EncryptionSettings,
    parse_keys,
)
from temporal_airflow.models.converter import StorageSettings, data_converter

SECRET = "conf-value-that-must-stay-private"


def new_key() -> EncryptionKey:
    return EncryptionKey(os.urandom(32))


def plain_payload(text: str = SECRET) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_round_trip_hides_data_and_metadata() -> None:
    key = new_key()
    codec = EncryptionCodec([key])
    [encrypted] = await codec.encode([plain_payload()])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata[KEY_ID_METADATA] == key.key_id.encode()
    assert SECRET.encode() not in encrypted.SerializeToString()
    assert b"json/plain" not in encrypted.data
    assert await codec.decode([encrypted]) == [plain_payload()]


async def test_each_encryption_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec([new_key()])
    first, second = await codec.encode([plain_payload(), plain_payload()])
    assert first.data != second.data


async def test_rotation_first_key_encrypts_every_key_decrypts() -> None:
    old, new = new_key(), new_key()
    [written_before] = await EncryptionCodec([old]).encode([plain_payload()])
    rotated = EncryptionCodec([new, old])
    [written_after] = await rotated.encode([plain_payload()])
    assert written_after.metadata[KEY_ID_METADATA] == new.key_id.encode()
    assert await rotated.decode([written_before, written_after]) == [plain_payload(), plain_payload()]


async def test_unknown_key_names_the_key_ids_and_the_setting() -> None:
    writer, reader = new_key(), new_key()
    [encrypted] = await EncryptionCodec([writer]).encode([plain_payload()])
    with pytest.raises(DecryptionError) as err:
        await EncryptionCodec([reader]).decode([encrypted])
    message = str(err.value)
    assert writer.key_id in message and reader.key_id in message and KEY_ENV in message


async def test_altered_payload_fails_authentication() -> None:
    codec = EncryptionCodec([new_key()])
    [encrypted] = await codec.encode([plain_payload()])
    encrypted.data = encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    with pytest.raises(DecryptionError, match="altered or corrupted"):
        await codec.decode([encrypted])


async def test_payloads_written_before_encryption_still_decode() -> None:
    assert await EncryptionCodec([new_key()]).decode([plain_payload()]) == [plain_payload()]


def test_settings_from_env_inline_list_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    as_text = [base64.b64encode(k.secret).decode() for k in (first, second)]
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, f"{as_text[0]}, {as_text[1]}")
    assert EncryptionSettings.from_env().keys == (first, second)

    key_file = tmp_path / "keys"
    key_file.write_text("\n".join(as_text) + "\n")
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    assert EncryptionSettings.from_env().keys == (first, second)

    monkeypatch.setenv(KEY_ENV, as_text[0])
    with pytest.raises(ValueError, match="not both"):
        EncryptionSettings.from_env()


def test_no_key_means_no_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    assert EncryptionSettings.from_env().codec() is None
    assert data_converter(StorageSettings(driver=None)).payload_codec is None


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(ValueError, match=KEY_ENV) as err:
        parse_keys(text, KEY_ENV)
    assert text not in str(err.value)


async def test_data_converter_encrypts_values_and_failure_messages() -> None:
    converter = data_converter(StorageSettings(driver=None), EncryptionSettings((new_key(),)))
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    [encoded] = await converter.encode([{"conf": SECRET}])
    assert SECRET.encode() not in encoded.SerializeToString()
    assert await converter.decode([encoded], [dict]) == [{"conf": SECRET}]

    failure = Failure()
    await converter.encode_failure(RuntimeError(f"task failed with {SECRET}"), failure)
    assert SECRET.encode() not in failure.SerializeToString()
    assert SECRET in str(await converter.decode_failure(failure))


TOKEN = "codec-token-for-tests"
ACCESS = CodecAccess(token=TOKEN, hosts=("codec",), namespaces=("default",), max_body_bytes=64 * 1024)
#: What the Temporal CLI sends (``--codec-auth "Bearer ..."``, the namespace it shows).
CALLER = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}


def codec_client(codec: EncryptionCodec, headers: dict[str, str] = CALLER) -> httpx.AsyncClient:
    app = create_app(codec, ["http://ui.example"], ACCESS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec", headers=headers)


def as_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def test_codec_server_encodes_and_decodes_in_the_remote_codec_format() -> None:
    codec = EncryptionCodec([new_key()])
    async with codec_client(codec) as http:
        encoded = await http.post("/encode", content=as_json(plain_payload()))
        assert encoded.status_code == 200
        [encrypted] = json_format.Parse(encoded.text, Payloads()).payloads
        assert encrypted.metadata["encoding"] == ENCODING
        decoded = await http.post("/decode", content=encoded.text)
        assert json_format.Parse(decoded.text, Payloads()).payloads == [plain_payload()]


async def test_codec_server_answers_the_ui_origin_only() -> None:
    async with codec_client(EncryptionCodec([new_key()])) as http:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        }
        allowed = await http.options("/decode", headers={"Origin": "http://ui.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
        refused = await http.options("/decode", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers


async def test_codec_server_reports_a_wrong_key_as_a_client_error() -> None:
    [encrypted] = await EncryptionCodec([new_key()]).encode([plain_payload()])
    async with codec_client(EncryptionCodec([new_key()])) as http:
        response = await http.post("/decode", content=as_json(encrypted))
    assert response.status_code == 400
    assert "not among the configured keys" in response.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Namespace": "default"}, 401),
        ({"Authorization": "Bearer not-the-token", "X-Namespace": "default"}, 401),
        ({"Authorization": f"Bearer {TOKEN}", "X-Namespace": "another-teams"}, 403),
        ({"Authorization": f"Bearer {TOKEN}"}, 403),
        ({**CALLER, "Host": "rebound.attacker.example"}, 400),
    ],
)
async def test_codec_server_decodes_only_for_its_callers(headers: dict[str, str], status: int) -> None:
    codec = EncryptionCodec([new_key()])
    [encrypted] = await codec.encode([plain_payload()])
    async with codec_client(codec, headers) as http:
        response = await http.post("/decode", content=as_json(encrypted))
    assert response.status_code == status
    assert "payloads" not in response.text


async def test_codec_server_refuses_a_body_over_its_cap() -> None:
    async with codec_client(EncryptionCodec([new_key()])) as http:
        response = await http.post("/decode", content=b"{" + b" " * (ACCESS.max_body_bytes + 1) + b"}")
    assert response.status_code == 413


def test_codec_server_will_not_start_open_to_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, base64.b64encode(new_key().secret).decode())
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    with pytest.raises(SystemExit, match="no access token"):
        codec_server_main(["--host", "127.0.0.1"])
    with pytest.raises(SystemExit, match="only a loopback address"):
        codec_server_main(["--host", "0.0.0.0", "--no-auth"])
