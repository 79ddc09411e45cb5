"""XCom values by reference in standalone mode: large values live in the payload store, not in history.

A value above the inline size is written once through the same storage driver the data converter uses
(:mod:`temporal_airflow.models.converter`), and only a reference travels in the try's result and in every
later task's input. The worker of the task that pulls it reads it back just before the try starts.

Stored values get what every other payload gets: they go through the same payload codec, so with an
encryption key the store holds ciphertext only. The reference carries the SHA-256 of the stored bytes,
checked on read, so a value altered or swapped in the store fails the reading try with an error saying
so. With a codec the reference itself is sealed by it (encrypted and authenticated), so a reference
forged by another namespace client (naming another object of an S3 / GCS bucket the worker can read) is
refused before anything is read; the local file store only ever reads files of its own folder. (Without
encryption, S3 / GCS claims are read as the reference gives them: configure a key where namespace
clients are not trusted.)

Without a payload store, values stay inline and the total one try may push is capped so that a result
always fits Temporal's payload limit; a try over the cap fails with an error naming the limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, replace

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    PayloadCodec,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from temporal_airflow.models import XCOM_TOO_LARGE_ERROR, TaskExecutionResult, XComEntry
from temporal_airflow.models.codec import ENCODING as ENCRYPTED_ENCODING

#: Values up to this size (bytes of JSON) stay inline in history.
INLINE_XCOM_BYTES = int(os.environ.get("TEMPORAL_AIRFLOW_INLINE_XCOM_BYTES", 2048))
#: Upper bound of the XComs one try keeps inline; Temporal payloads are capped at 2 MiB.
MAX_XCOM_BYTES = int(os.environ.get("TEMPORAL_AIRFLOW_MAX_XCOM_BYTES", 512 * 1024))
#: Error type of a try whose stored upstream XCom is refused (altered, swapped, forged reference).
STORED_XCOM_REFUSED_ERROR = "StoredXComRefused"
#: A reference sealed by the codec starts with this.
_SEALED = "sealed:"


class StoredXComRefused(RuntimeError):
    """A stored XCom's reference or bytes are not what this store wrote."""


@dataclass(frozen=True)
class XComRefs:
    """Moves XCom values between workflow history and the payload store."""

    driver: StorageDriver | None
    #: The data converter's payload codec (encryption), applied to stored values and references.
    codec: PayloadCodec | None = None
    inline_bytes: int = INLINE_XCOM_BYTES
    max_inline_bytes: int = MAX_XCOM_BYTES

    async def offload(self, result: TaskExecutionResult) -> TaskExecutionResult:
        """Store the try's large values; fail the try (not retryable) if what stays inline is too big."""
        entries = list(result.xcoms)
        big = [i for i, x in enumerate(entries) if x.value_ref is None and len(x.value_json) > self.inline_bytes]
        if big and self.driver is not None:
            payloads = [_payload(entries[i].value_json) for i in big]
            if self.codec is not None:
                payloads = list(await self.codec.encode(payloads))
            claims = await self.driver.store(StorageDriverStoreContext(), payloads)
            for i, claim, payload in zip(big, claims, payloads, strict=True):
                ref = {"driver": self.driver.name(), "claim": dict(claim.claim_data), "sha256": _digest(payload)}
                entries[i] = replace(entries[i], value_json="", value_ref=await self._seal(ref))
        result.xcoms = entries
        size = sum(len(x.value_json.encode()) for x in entries)
        if size <= self.max_inline_bytes:
            return result
        keys = ", ".join(sorted({x.key for x in entries}))
        result.state = "failed"
        result.error = (
            f"{XCOM_TOO_LARGE_ERROR}: task {result.task_id} pushed {size} bytes of XCom ({keys}); the limit is "
            f"{self.max_inline_bytes} bytes (TEMPORAL_AIRFLOW_MAX_XCOM_BYTES) without a payload store "
            "(TEMPORAL_AIRFLOW_PAYLOAD_STORAGE). Configure a payload store, or store large data externally "
            "and pass a reference."
        )
        result.xcoms = []
        return result

    async def resolve(self, entries: list[XComEntry]) -> list[XComEntry]:
        """The same entries with every stored value read back into ``value_json``."""
        stored = [i for i, x in enumerate(entries) if x.value_ref is not None]
        if not stored:
            return entries
        if self.driver is None:
            raise RuntimeError("XComs were stored by reference but this worker has no payload store configured")
        refs = [await self._unseal(entries[i]) for i in stored]
        for ref in refs:
            if ref.get("driver") != self.driver.name():
                raise RuntimeError(f"XCom stored by {ref.get('driver')!r}, not by this worker's {self.driver.name()!r}")
        claims = [StorageDriverClaim(claim_data=ref["claim"]) for ref in refs]
        payloads = list(await self.driver.retrieve(StorageDriverRetrieveContext(), claims))
        for i, ref, payload in zip(stored, refs, payloads, strict=True):
            if "sha256" in ref and _digest(payload) != ref["sha256"]:
                raise StoredXComRefused(
                    f"stored XCom {entries[i].key!r} of task {entries[i].task_id} was altered or swapped in the "
                    f"payload store: its SHA-256 is not the {ref['sha256']} it was written with"
                )
        if self.codec is not None:
            payloads = list(await self.codec.decode(payloads))
        resolved = list(entries)
        for i, payload in zip(stored, payloads, strict=True):
            resolved[i] = replace(resolved[i], value_json=payload.data.decode(), value_ref=None)
        return resolved

    async def _seal(self, ref: dict) -> str:
        text = json.dumps(ref, sort_keys=True)
        if self.codec is None:
            return text
        [sealed] = await self.codec.encode([_payload(text)])
        return _SEALED + base64.b64encode(sealed.SerializeToString(deterministic=True)).decode()

    async def _unseal(self, entry: XComEntry) -> dict:
        text = entry.value_ref or "{}"
        if not text.startswith(_SEALED):
            if self.codec is not None:
                raise StoredXComRefused(
                    f"XCom {entry.key!r} of task {entry.task_id} names a stored value by a reference this store "
                    "did not seal (with encryption configured, every reference is sealed by the codec)"
                )
            ref: dict = json.loads(text)
            return ref
        if self.codec is None:
            raise RuntimeError(
                f"XCom {entry.key!r} of task {entry.task_id} was stored by an encrypting worker; configure the "
                "same encryption key (TEMPORAL_AIRFLOW_ENCRYPTION_KEY) on this worker"
            )
        sealed = Payload()
        sealed.ParseFromString(base64.b64decode(text.removeprefix(_SEALED)))
        if sealed.metadata.get("encoding") != ENCRYPTED_ENCODING:
            raise StoredXComRefused(f"XCom {entry.key!r} of task {entry.task_id}: its reference is not sealed")
        [plain] = await self.codec.decode([sealed])
        ref = json.loads(plain.data)
        return ref


def _digest(payload: Payload) -> str:
    return hashlib.sha256(payload.SerializeToString(deterministic=True)).hexdigest()


def _payload(value_json: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=value_json.encode())
