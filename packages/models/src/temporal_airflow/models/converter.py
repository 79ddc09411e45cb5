"""The data converter every temporal-airflow client and worker shares.

Whatever crosses Temporal is written by this converter, so every component must build it the same way:
the orchestrator that starts runs, the workflow worker and the activity worker. It adds to the SDK's
default converter, with the SDK's own mechanisms:

- **encryption** (:class:`temporal_airflow.models.codec.EncryptionCodec`, a ``PayloadCodec``), when a key
  is configured (``TEMPORAL_AIRFLOW_ENCRYPTION_KEY`` / ``_FILE``, see :mod:`temporal_airflow.models.codec`):
  every payload, and the message and stack trace of every failure, is encrypted before it leaves the
  process. The SDK encrypts before it stores a payload externally, so stored payloads are encrypted too.

- **claim-check storage** (:class:`temporalio.converter.ExternalStorage`): any payload above a threshold
  (a large serialized DAG, a big conf, a fan-in of many XComs) is written to a storage driver and only a
  small reference enters workflow history. The driver is a local folder for one machine (the CLI and the
  local stack), or the SDK's S3 / GCS drivers for a real deployment. XCom values above a small inline size
  are stored through the same driver and codec one by one (``temporal_airflow.activities.xcom_refs``), so a
  task's input carries references, never the values.

Configuration (environment, read by :func:`data_converter`):

``TEMPORAL_AIRFLOW_PAYLOAD_STORAGE``
    ``off`` (no external storage: large payloads hit Temporal's 2 MB limit and fail with a clear error),
    or a folder path / ``file:///path`` (default: ``~/.cache/temporal-airflow/payloads``). All workers
    and clients of one namespace must use the same store: a shared mount, or the SDK's S3 / GCS driver
    given in code (``StorageSettings(driver=S3StorageDriver(...))``).
``TEMPORAL_AIRFLOW_PAYLOAD_THRESHOLD``
    payload size in bytes from which a payload is stored externally (default 131072).
``TEMPORAL_AIRFLOW_ENCRYPTION_KEY`` / ``TEMPORAL_AIRFLOW_ENCRYPTION_KEY_FILE``
    base64 AES-256 key(s), comma-separated, the first one encrypts (default: no encryption).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from temporal_airflow.models.codec import EncryptionSettings

STORAGE_ENV = "TEMPORAL_AIRFLOW_PAYLOAD_STORAGE"
THRESHOLD_ENV = "TEMPORAL_AIRFLOW_PAYLOAD_THRESHOLD"
DEFAULT_THRESHOLD = 128 * 1024


class StoredPayloadAltered(ValueError):
    """A stored payload's bytes are not the ones its claim names."""


class LocalFileStorageDriver(StorageDriver):
    """Content-addressed payload files in one folder (a single machine or a shared mount).

    A payload is stored once under the SHA-256 of its bytes, so retried activities and replays that
    store the same payload again write nothing new. Files are written 0600 in folders created 0700 (only
    the workers' user reads them; payloads are encrypted too when a key is configured), never through a
    symlink; a read checks the file's SHA-256 against its claim (a file altered or swapped fails with
    :class:`StoredPayloadAltered`), and a claim names a digest, never a path, so reads stay in the folder.
    """

    def __init__(self, root: str | os.PathLike[str], name: str = "local-file") -> None:
        self.root = Path(root).expanduser()
        self._name = name

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return "temporal-airflow.local-file"

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"malformed payload claim {digest!r}")
        return self.root / digest[:2] / digest

    def _store_one(self, payload: Payload) -> StorageDriverClaim:
        data = payload.SerializeToString(deterministic=True)
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            tmp = path.with_name(f"{digest}.{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return StorageDriverClaim(claim_data={"sha256": digest})

    def _retrieve_one(self, claim: StorageDriverClaim) -> Payload:
        digest = claim.claim_data.get("sha256", "")
        path = self._path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"stored payload {path} is missing: every worker and client must share the payload store "
                f"({STORAGE_ENV})"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoredPayloadAltered(
                f"stored payload {path} was altered or swapped: its SHA-256 is not the one it was stored under"
            )
        payload = Payload()
        payload.ParseFromString(data)
        return payload

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(lambda: [self._store_one(p) for p in payloads])

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await asyncio.to_thread(lambda: [self._retrieve_one(c) for c in claims])


@dataclass(frozen=True)
class StorageSettings:
    """Where large payloads go; ``driver`` is ``None`` when external storage is off."""

    driver: StorageDriver | None
    threshold: int = DEFAULT_THRESHOLD

    @classmethod
    def from_env(cls) -> StorageSettings:
        spec = os.environ.get(STORAGE_ENV, "").strip()
        threshold = int(os.environ.get(THRESHOLD_ENV, DEFAULT_THRESHOLD))
        return cls(driver=storage_driver(spec), threshold=threshold)

    def external_storage(self) -> ExternalStorage | None:
        if self.driver is None:
            return None
        return ExternalStorage(drivers=[self.driver], payload_size_threshold=self.threshold)


def storage_driver(spec: str) -> StorageDriver | None:
    """The driver a ``TEMPORAL_AIRFLOW_PAYLOAD_STORAGE`` value names (see the module docstring)."""
    if spec.lower() in ("off", "none", "false", "0"):
        return None
    if "://" in spec and not spec.startswith("file://"):
        raise ValueError(
            f"{STORAGE_ENV}={spec!r}: only a folder or file:// URL can be configured by environment; pass the "
            "SDK's S3StorageDriver or GCSStorageDriver (temporalio.contrib) to TemporalAirflowPlugin(storage=...)"
        )
    path = spec.removeprefix("file://") or os.path.join("~", ".cache", "temporal-airflow", "payloads")
    return LocalFileStorageDriver(path)


def data_converter(
    storage: StorageSettings | None = None, encryption: EncryptionSettings | None = None
) -> DataConverter:
    """The converter for every client and worker (environment configuration unless given)."""
    storage = storage or StorageSettings.from_env()
    codec = (encryption or EncryptionSettings.from_env()).codec()
    # Failure messages and stack traces (task errors) become payloads, hence encrypted, only with the latter.
    failures = DefaultFailureConverter if codec is None else DefaultFailureConverterWithEncodedAttributes
    return DataConverter(
        payload_codec=codec, failure_converter_class=failures, external_storage=storage.external_storage()
    )
