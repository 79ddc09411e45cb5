"""Airflow's "now" is the workflow's time inside workflows and the wall clock elsewhere."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from temporal_airflow.workflows import airflow_compat


@workflow.defn(sandboxed=False)
class AirflowNowProbe:
    @workflow.run
    async def run(self, pause: float) -> list[tuple[bool, str]]:
        from airflow._shared.timezones import timezone as core_tz
        from airflow.sdk._shared.timezones import timezone as sdk_tz

        seen = []
        for _ in range(3):
            now = workflow.now()
            seen.append((core_tz.utcnow() == now == sdk_tz.utcnow(), now.isoformat()))
            await asyncio.sleep(pause)
        return seen


def test_outside_workflows_airflow_sees_the_wall_clock() -> None:
    airflow_compat.install()
    from airflow._shared.timezones import timezone as core_tz

    assert abs(core_tz.utcnow() - datetime.now(UTC)) < timedelta(seconds=1)
    assert core_tz.utcnow().tzinfo is not None


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_workflows_each_see_their_own_time(client: Client) -> None:
    airflow_compat.install()
    queue = f"clock-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[AirflowNowProbe]):
        results = await asyncio.gather(
            *(
                client.execute_workflow(AirflowNowProbe.run, 0.2 * i, id=f"clock-{uuid.uuid4()}", task_queue=queue)
                for i in range(1, 6)
            )
        )
    for seen in results:
        assert [same for same, _ in seen] == [True, True, True]
        times = [when for _, when in seen]
        assert times == sorted(times) and len(set(times)) == 3
