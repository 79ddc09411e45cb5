"""Standalone mode against a real Temporal dev server: example DAGs, differential against dag.test()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import EXAMPLES, DagRunner, states

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


@pytest.fixture(scope="session")
def reference_home() -> str:
    """An AIRFLOW_HOME with a migrated SQLite metadata DB, for Airflow's own dag.test()."""
    home = tempfile.mkdtemp(prefix="airflow-reference-")
    env = _reference_env(home)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    return home


def _reference_env(home: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
    )
    return env


def airflow_dag_test(home: str, dag_file: Path, conf: dict | None) -> dict:
    args = [sys.executable, str(Path(__file__).parent / "airflow_reference.py"), str(dag_file)]
    if conf:
        args.append(json.dumps(conf))
    proc = subprocess.run(args, env=_reference_env(home), capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"dag.test() gave no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("example", sorted(EXPECTED))
async def test_example_matches_airflow_dag_test(example: str, dag_runner: DagRunner, reference_home: str) -> None:
    dag_file = EXAMPLES / f"{example}.py"
    result = await dag_runner.run(dag_file, conf=CONF.get(example, {}))
    ours = states(result)
    expected = EXPECTED[example]
    assert result.state == expected["state"]
    for task_id, state in expected["tasks"].items():  # type: ignore[attr-defined]
        assert ours[task_id] == state, task_id

    reference = airflow_dag_test(reference_home, dag_file, CONF.get(example))
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
