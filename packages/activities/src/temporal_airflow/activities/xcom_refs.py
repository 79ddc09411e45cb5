"""XCom values by reference in standalone mode: large values live in the payload store, not in history.

A value above the inline size is written once through the same storage driver the data converter uses
(:mod:`temporal_airflow.models.converter`), and only the driver's claim travels in the try's result and
in every later task's input. The worker of the task that pulls it reads it back just before the try
starts. Without a payload store, values stay inline and the total one try may push is capped so that a
result always fits Temporal's payload limit; a try over the cap fails with an error naming the limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from temporal_airflow.models import XCOM_TOO_LARGE_ERROR, TaskExecutionResult, XComEntry

#: Values up to this size (bytes of JSON) stay inline in history.
INLINE_XCOM_BYTES = int(os.environ.get("TEMPORAL_AIRFLOW_INLINE_XCOM_BYTES", 2048))
#: Upper bound of the XComs one try keeps inline; Temporal payloads are capped at 2 MiB.
MAX_XCOM_BYTES = int(os.environ.get("TEMPORAL_AIRFLOW_MAX_XCOM_BYTES", 512 * 1024))


@dataclass(frozen=True)
class XComRefs:
    """Moves XCom values between workflow history and the payload store."""

    driver: StorageDriver | None
    inline_bytes: int = INLINE_XCOM_BYTES
    max_inline_bytes: int = MAX_XCOM_BYTES

    async def offload(self, result: TaskExecutionResult) -> TaskExecutionResult:
        """Store the try's large values; fail the try (not retryable) if what stays inline is too big."""
        entries = list(result.xcoms)
        big = [i for i, x in enumerate(entries) if x.value_ref is None and len(x.value_json) > self.inline_bytes]
        if big and self.driver is not None:
            payloads = [_payload(entries[i].value_json) for i in big]
            claims = await self.driver.store(StorageDriverStoreContext(), payloads)
            for i, claim in zip(big, claims, strict=True):
                ref = json.dumps({"driver": self.driver.name(), "claim": dict(claim.claim_data)}, sort_keys=True)
                entries[i] = replace(entries[i], value_json="", value_ref=ref)
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
        claims = []
        for i in stored:
            ref = json.loads(entries[i].value_ref or "{}")
            if ref.get("driver") != self.driver.name():
                raise RuntimeError(f"XCom stored by {ref.get('driver')!r}, not by this worker's {self.driver.name()!r}")
            claims.append(StorageDriverClaim(claim_data=ref["claim"]))
        payloads = await self.driver.retrieve(StorageDriverRetrieveContext(), claims)
        resolved = list(entries)
        for i, payload in zip(stored, payloads, strict=True):
            resolved[i] = replace(resolved[i], value_json=payload.data.decode(), value_ref=None)
        return resolved


def _payload(value_json: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=value_json.encode())
