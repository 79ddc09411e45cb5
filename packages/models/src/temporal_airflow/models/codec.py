"""Optional encryption of every payload temporal-airflow writes to Temporal (AES-256-GCM).

Workflow histories carry what users consider private: a run's conf, the variables given to a run, XCom
values, task errors and tracebacks. With a key configured, :class:`EncryptionCodec` (a
:class:`temporalio.converter.PayloadCodec`, the SDK's own mechanism) encrypts each payload inside the
client or worker that writes it, so the Temporal server, its database and its UI only see ciphertext.
The UI shows the values again through the codec server (``temporal-airflow-codec-server``).

Every encrypted payload names the key it was written with (``encryption-key-id``: the first 16 hex digits
of the key's SHA-256), so keys rotate: configure ``NEW,OLD``, the first key encrypts and every configured
key decrypts; drop the old key once no open history needs it. Payloads that are not encrypted are
decoded as they are, so runs started before encryption was turned on can finish.

Configuration (environment, read by :meth:`EncryptionSettings.from_env`): base64 of 32 random bytes
(``openssl rand -base64 32``), a comma-separated list for rotation, in

``TEMPORAL_AIRFLOW_ENCRYPTION_KEY``
    the key(s) themselves, or
``TEMPORAL_AIRFLOW_ENCRYPTION_KEY_FILE``
    a file holding them (comma- or newline-separated), e.g. a mounted secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

KEY_ENV = "TEMPORAL_AIRFLOW_ENCRYPTION_KEY"
KEY_FILE_ENV = "TEMPORAL_AIRFLOW_ENCRYPTION_KEY_FILE"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_NONCE_BYTES = 12


class DecryptionError(ValueError):
    """A payload cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class EncryptionKey:
    """One AES-256 key; ``key_id`` identifies it in payload metadata without revealing it."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError(f"an encryption key must be 32 bytes, got {len(self.secret)}")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:16]

    @classmethod
    def from_base64(cls, text: str, source: str) -> EncryptionKey:
        try:
            return cls(base64.b64decode(text, validate=True))
        except ValueError as err:  # binascii.Error included; the message never quotes the key
            raise ValueError(
                f"{source}: {err} (a key is base64 of 32 random bytes: `openssl rand -base64 32`)"
            ) from None


def parse_keys(text: str, source: str) -> tuple[EncryptionKey, ...]:
    """Keys from a comma- or whitespace-separated list of base64 keys; the first one encrypts."""
    return tuple(EncryptionKey.from_base64(part, source) for part in text.replace(",", " ").split())


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (metadata included), one random nonce per payload.

    The key id is authenticated along with the data, so a payload cannot be passed off as written with
    another key.
    """

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self._encrypting = keys[0]
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        key_id = self._encrypting.key_id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=nonce + sealed)

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(
                f"payload was encrypted with key id {key_id or '(none)'}, which is not among the configured keys "
                f"(ids: {', '.join(self._ciphers)}); add that key to {KEY_ENV} (comma-separated: the first key "
                "encrypts, all of them decrypt)"
            )
        nonce, sealed = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"payload encrypted with key id {key_id} failed authentication: it was altered or corrupted"
            ) from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


@dataclass(frozen=True)
class EncryptionSettings:
    """The keys payloads are encrypted with; none means encryption is off."""

    keys: tuple[EncryptionKey, ...] = ()

    @classmethod
    def from_env(cls) -> EncryptionSettings:
        inline = os.environ.get(KEY_ENV, "").strip()
        path = os.environ.get(KEY_FILE_ENV, "").strip()
        if inline and path:
            raise ValueError(f"set {KEY_ENV} or {KEY_FILE_ENV}, not both")
        if path:
            return cls(parse_keys(Path(path).expanduser().read_text(), KEY_FILE_ENV))
        return cls(parse_keys(inline, KEY_ENV))

    def codec(self) -> EncryptionCodec | None:
        return EncryptionCodec(self.keys) if self.keys else None
