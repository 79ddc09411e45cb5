"""The wire contract round-trips through Temporal's default data converter, field for field."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing

import pytest
from temporalio.converter import DataConverter

import temporal_airflow.models as models

NOW = dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC)
ENTRY = models.XComEntry(
    task_id="t", key="return_value", value_json='{"a": [1, 2]}', map_index=2, mapped_length=3, value_ref='{"c": 1}'
)
RUN = models.RunContext(
    dag_id="d",
    run_id="r",
    run_type="manual",
    run_after=NOW,
    start_date=NOW,
    logical_date=NOW,
    data_interval_start=NOW,
    data_interval_end=NOW,
    conf={"k": [1, "two"]},
)
RESCHEDULE = models.Reschedule(reschedule_date=NOW, first_start_date=NOW, count=2)
OUTCOME = models.TriggerOutcome(payload={"p": 1}, task_state="success", failure="f", traceback=["tb"])
DEFERRAL = models.Deferral(
    classpath="m.Trigger",
    trigger_kwargs={"k": 1},
    next_method="execute_complete",
    next_kwargs={"a": 1},
    timeout_at=NOW,
    moment=NOW,
    moment_event=OUTCOME,
)
SUMMARY = models.TaskSummary(
    task_id="t",
    state="success",
    try_number=2,
    start_date=NOW,
    end_date=NOW,
    xcoms=[ENTRY],
    error="E",
    retry_delay_seconds=2.0,
    reschedule=RESCHEDULE,
    deferral=DEFERRAL,
)
TASK_INPUT = models.ActivityTaskInput(
    dag_path="/d.py",
    task_id="t",
    try_number=1,
    max_tries=2,
    run=RUN,
    map_index=0,
    upstream_xcoms=[ENTRY],
    variables={"v": "1"},
    deep_integration=True,
    reschedule=RESCHEDULE,
    next_method="execute_complete",
    next_kwargs={"event": 1},
    max_active_tis_per_dag=2,
)
ASSET_UPDATE = models.AssetUpdate(uri="s3://b/k", name="k", task_id="t", map_index=1)
SNAPSHOT = models.RunSnapshot(run=RUN, fileloc="/d.py", serialized_dag={"dag": {}}, tasks=[SUMMARY], generation=2)

HOLDER = models.PoolHolder(workflow_id="w", run_id="r", try_id="t#try1", slots=2)

PREVIOUS = models.PreviousRun(run_id="p", logical_date=NOW, run_type="scheduled", state="failed", tasks=[SUMMARY])

SAMPLES: dict[type, object] = {
    models.XComEntry: ENTRY,
    models.RunContext: RUN,
    models.DagExecutionInput: models.DagExecutionInput(
        dag_path="/dags/x.py",
        dag_id="x",
        run_id="r",
        logical_date=NOW,
        conf={"a": 1},
        variables={"v": "1"},
        resume=SNAPSHOT,
    ),
    models.Reschedule: RESCHEDULE,
    models.TriggerOutcome: OUTCOME,
    models.Deferral: DEFERRAL,
    models.RunSnapshot: SNAPSHOT,
    models.TriggerInput: models.TriggerInput(task=TASK_INPUT, deferral=DEFERRAL),
    models.DagCallbackInput: models.DagCallbackInput(dag_path="/d.py", request_json="{}", variables={"v": "1"}),
    models.LoadDagFileInput: models.LoadDagFileInput(dag_path="/dags/x.py", dag_id="x"),
    models.LoadDagFileResult: models.LoadDagFileResult(dag_id="x", fileloc="/dags/x.py", serialized_dag={"dag": {}}),
    models.ActivityTaskInput: TASK_INPUT,
    models.TaskExecutionResult: models.TaskExecutionResult(
        task_id="t",
        state="up_for_retry",
        try_number=1,
        start_date=NOW,
        end_date=NOW,
        xcoms=[ENTRY],
        skipped_task_ids=["a"],
        retry_delay_seconds=1.5,
        error="E",
        traceback="tb",
        hostname="h",
        reschedule_date=NOW,
        deferral=DEFERRAL,
    ),
    models.TaskSummary: SUMMARY,
    models.AssetUpdate: ASSET_UPDATE,
    models.DagExecutionResult: models.DagExecutionResult(
        dag_id="d",
        run_id="r",
        state="success",
        tasks=[SUMMARY],
        start_date=NOW,
        end_date=NOW,
        asset_updates=[ASSET_UPDATE],
    ),
    models.RunProgress: models.RunProgress(dag_id="d", run_id="r", state="running", tasks=[SUMMARY]),
    models.DeepDagExecutionInput: models.DeepDagExecutionInput(
        dag_id="d", logical_date=NOW, run_id="r", conf={"a": 1}, resume=SNAPSHOT
    ),
    models.LoadSerializedDagInput: models.LoadSerializedDagInput(dag_id="d"),
    models.LoadSerializedDagResult: models.LoadSerializedDagResult(
        dag_id="d", fileloc="/f.py", serialized_dag={"a": 1}, dag_version_id="v"
    ),
    models.CreateDagRunInput: models.CreateDagRunInput(dag_id="d", logical_date=NOW, run_id="r", conf={"a": 1}),
    models.CreateDagRunResult: models.CreateDagRunResult(run_id="r", dag_run_id=3, created=True, run_context=RUN),
    models.EnsureTaskInstancesInput: models.EnsureTaskInstancesInput(dag_id="d", run_id="r"),
    models.TaskStatusSync: models.TaskStatusSync(
        dag_id="d",
        run_id="r",
        task_id="t",
        state="running",
        try_number=1,
        start_date=NOW,
        end_date=NOW,
        hostname="h",
        xcoms=[ENTRY],
    ),
    models.TaskInstancesSnapshot: models.TaskInstancesSnapshot(tasks=[SUMMARY]),
    models.StartDeepRunResult: models.StartDeepRunResult(
        dag=models.LoadSerializedDagResult(dag_id="d", fileloc="/d.py", serialized_dag={"dag": {}}, dag_version_id="v"),
        run=models.CreateDagRunResult(run_id="r", dag_run_id=3, created=True, run_context=RUN),
        task_instances=models.TaskInstancesSnapshot(tasks=[SUMMARY]),
    ),
    models.TaskStatusSyncBatch: models.TaskStatusSyncBatch(
        updates=[models.TaskStatusSync(dag_id="d", run_id="r", task_id="t", state="success", try_number=1)]
    ),
    models.DagRunStatusSync: models.DagRunStatusSync(dag_id="d", run_id="r", state="success", end_date=NOW),
    models.TaskMark: models.TaskMark(task_id="t", state="skipped", map_index=2),
    models.PreviousRunInput: models.PreviousRunInput(dag_id="d", run_id="r", task_ids=["t"], catchup=True),
    models.PreviousRun: PREVIOUS,
    models.PreviousRunResult: models.PreviousRunResult(previous=PREVIOUS),
    models.PoolHolder: HOLDER,
    models.PoolHolders: models.PoolHolders(holders=[HOLDER]),
    models.PoolState: models.PoolState(
        pool="p", service_task_queue="q-service", size=3, holders=[HOLDER], check_every_seconds=5.0
    ),
    models.PoolAcquisition: models.PoolAcquisition(holder=HOLDER, size=3),
    models.PoolSlotRequest: models.PoolSlotRequest(pool="p", holder=HOLDER, workflow_task_queue="wq", size=3),
}


def test_every_model_has_a_sample() -> None:
    declared = {obj for obj in vars(models).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)}
    assert declared == set(SAMPLES)


@pytest.mark.parametrize("model", list(SAMPLES), ids=lambda m: m.__name__)
async def test_round_trip_through_default_converter(model: type) -> None:
    sample = SAMPLES[model]
    for f in dataclasses.fields(model):  # samples must not rely on defaults for optional fields
        hints = typing.get_type_hints(model)
        if "None" in str(hints[f.name]):
            assert getattr(sample, f.name) is not None, f"{model.__name__}.{f.name} left empty in sample"
    converter = DataConverter.default
    payloads = await converter.encode([sample])
    (decoded,) = await converter.decode(payloads, [model])
    assert decoded == sample


def test_models_do_not_import_airflow() -> None:
    import subprocess
    import sys

    code = "import sys, temporal_airflow.models; print(any(m.startswith('airflow') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
