"""What a worker refuses to do for whoever can start workflows or activities in the namespace, and what
task code cannot see (issue 22): triggers are Airflow ``BaseTrigger`` classes from allowed modules only,
stored XComs are encrypted and verified, and task processes get no Temporal or encryption secrets."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from conftest import TEST_DAGS, Queues
from temporal_airflow.activities.trigger_classes import TRIGGER_REFUSED, TriggerRefused, trigger_class
from temporal_airflow.models import RUN_TRIGGER_ACTIVITY, ActivityTaskInput, Deferral, RunContext, TriggerInput

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

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
