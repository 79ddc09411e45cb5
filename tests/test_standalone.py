"""Standalone mode against a real Temporal dev server: example DAGs, differential against dag.test()."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import EXAMPLES, DagRunner, airflow_dag_test, states

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CONF = {"bash_templating": {"name": "temporal"}}

# What a user expects of each example, beyond agreeing with dag.test().
EXPECTED: dict[str, dict[str, object]] = {
    "etl": {"state": "success", "tasks": {"remove_workspace": "success", "load": "success"}},
    "trigger_rules": {
        "state": "failed",
        "tasks": {
            "boom": "failed",
            "skip_me": "skipped",
            "after_failure": "upstream_failed",
            "after_skip": "skipped",
            **{
                f"rule_{rule}": "success"
                for rule in (
                    "all_success",
                    "all_failed",
                    "all_done",
                    "all_done_min_one_success",
                    "all_skipped",
                    "one_success",
                    "one_failed",
                    "one_done",
                    "none_failed",
                    "none_failed_min_one_success",
                    "none_skipped",
                    "always",
                )
            },
        },
    },
    "branching": {
        "state": "success",
        "tasks": {
            "fast_path": "success",
            "slow_path": "skipped",
            "join": "success",
            "after_closed": "skipped",
        },
    },
    "flaky_retry": {"state": "success", "tasks": {"flaky": "success", "report": "success"}},
    "bash_templating": {"state": "success", "tasks": {"greet": "success", "count_words": "success"}},
}


@pytest.mark.parametrize("example", sorted(EXPECTED))
async def test_example_matches_airflow_dag_test(example: str, dag_runner: DagRunner, reference_home: str) -> None:
    dag_file = EXAMPLES / f"{example}.py"
    # Side by side: dag.test() in its subprocess (off the event loop, where this session's workers run).
    result, reference = await asyncio.gather(
        dag_runner.run(dag_file, conf=CONF.get(example, {})),
        asyncio.to_thread(airflow_dag_test, reference_home, dag_file, CONF.get(example)),
    )
    ours = states(result)
    expected = EXPECTED[example]
    assert result.state == expected["state"]
    for task_id, state in expected["tasks"].items():  # type: ignore[attr-defined]
        assert ours[task_id] == state, task_id

    assert ours == reference["tasks"]
    assert result.state == reference["state"]


async def test_etl_passes_xcoms_between_tasks(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(EXAMPLES / "etl.py")
    xcoms = {t.task_id: {x.key: json.loads(x.value_json) for x in t.xcoms} for t in result.tasks}
    assert xcoms["transform.hottest"]["return_value"] == "Pune"
    # load pulled "extract" (two levels up) with ti.xcom_pull and got the rows.
    assert xcoms["load"]["return_value"] == {"loaded": 3, "hottest": "Pune", "raw_rows": 3}
    assert xcoms["create_workspace"]["return_value"] == "workspace-1"


async def test_bash_templates_render_conf_params_and_dates(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(
        EXAMPLES / "bash_templating.py", conf={"name": "ada"}, logical_date=_date("2024-05-17T00:00:00+00:00")
    )
    values = {t.task_id: json.loads(t.xcoms[0].value_json) for t in result.tasks if t.xcoms}
    assert values["greet"] == "hello ada on 2024-05-17"
    assert values["count_words"] == "4"
    assert values["env_and_interval"] == f"{result.run_id}|True"


async def test_flaky_task_succeeds_on_its_second_try(dag_runner: DagRunner) -> None:
    result = await dag_runner.run(EXAMPLES / "flaky_retry.py")
    flaky = next(t for t in result.tasks if t.task_id == "flaky")
    assert (flaky.state, flaky.try_number) == ("success", 2)
    assert flaky.error is None
    # The retry waited for the task's own retry_delay (2 s) on a durable timer.
    report = next(t for t in result.tasks if t.task_id == "report")
    assert json.loads(report.xcoms[0].value_json) == "succeeded after 2 tries"


def _date(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
