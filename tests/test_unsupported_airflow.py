"""An Airflow outside the supported range stops every entry point at start, with one clear line.

Runs only where such an Airflow is installed: ``.ci/airflow-matrix 3.1.8`` makes that environment (a
real Airflow 3.1 from PyPI, not a patched version string); everywhere else it is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import EXAMPLES
from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, check_airflow_version


def _unsupported() -> bool:
    try:
        check_airflow_version(version("apache-airflow"))
    except UnsupportedAirflowVersion:
        return True
    return False


pytestmark = pytest.mark.skipif(not _unsupported(), reason="the installed Airflow is a supported one")

BIN = Path(sys.executable).parent
#: The line every component prints (the component's name may come first).
SAYS = f"supports Airflow 3.2, 3.3 and 3.4 (apache-airflow>=3.2,<3.5); found Airflow {version('apache-airflow')}"


@pytest.mark.parametrize(
    "command",
    [
        ["temporal-airflow", "run", str(EXAMPLES / "etl.py")],
        ["temporal-airflow", "up", "--workdir", "{tmp}/stack"],
        ["temporal-airflow", "worker", "all"],
        ["temporal-airflow-workflow-worker"],
        ["temporal-airflow-activity-worker"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_every_command_refuses_at_start_in_one_line(command: list[str], tmp_path: Path) -> None:
    argv = [str(BIN / command[0]), *(arg.format(tmp=tmp_path) for arg in command[1:])]
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}  # nothing may get as far as connecting
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if SAYS in line], done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "stack").exists()  # `up` started nothing


def test_the_orchestrator_plugin_stops_the_scheduler(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    done = subprocess.run([str(BIN / "airflow"), "scheduler"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert f"temporal-airflow orchestrator {SAYS}. Refusing to schedule" in done.stdout + done.stderr
