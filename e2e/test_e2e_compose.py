"""docker/compose.yaml as users start it: up with docker compose, healthy, a DAG run over the REST API that
succeeds with its workflow completed in Temporal, then down with nothing left behind.

Runs in container mode only (it needs the Docker engine and compose: v2's ``docker compose`` or Debian's
``docker-compose``) and a bridge network, with the images the harness uses, on published ports that are
free on 127.0.0.1 (so that it never collides with another stack).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_containers import COMPOSE_FILE, TEMPORAL_PORTS, built_images, free_ports, signals_deferred
from temporalio.client import WorkflowExecutionStatus

from e2e_harness import Deployment, eventually
from e2e_stack import E2E_DAGS, Endpoints, choose_mode
from temporal_airflow.cli.airflow_rest import AirflowRest

pytestmark = pytest.mark.skipif(choose_mode() != "docker", reason="the compose stack needs a Docker engine")


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if found := shutil.which("docker-compose"):
        return [found]
    pytest.fail("no docker compose: install Debian's docker-compose or Docker's compose plugin")


@dataclass
class ComposeProject:
    """One ``docker compose -p NAME`` project of compose.yaml, with the variables it was started with."""

    name: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 600) -> str:
        command = [*compose_command(), "-p", self.name, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
            listed = subprocess.run(["docker", *kind, "-q", "--filter", label], capture_output=True, text=True)
            found += listed.stdout.split()
        return found


def bridge_networks_work() -> bool:
    name = f"temporal-airflow-compose-probe-{os.getpid()}"
    if subprocess.run(["docker", "network", "create", name], capture_output=True).returncode != 0:
        return False
    subprocess.run(["docker", "network", "rm", name], capture_output=True)
    return True


@pytest.fixture
def compose() -> Iterator[tuple[ComposeProject, Endpoints]]:
    if not bridge_networks_work():
        pytest.skip("this Docker engine cannot create a bridge network")
    env = {**os.environ, **built_images(), "DAGS_FOLDER": str(E2E_DAGS)}
    env |= dict(zip(("AIRFLOW_PORT", *TEMPORAL_PORTS), map(str, free_ports(4)), strict=True))
    project = ComposeProject(f"temporal-airflow-compose-{os.getpid()}", env)
    try:
        project("up", "-d")
        api_url = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
        yield project, Endpoints("compose", api_url, f"127.0.0.1:{env['TEMPORAL_PORT']}")
    finally:
        with signals_deferred():
            project("down", "-v", "--remove-orphans", "--timeout", "5")
    assert project.leftovers() == []


def test_compose_stack_runs_a_dag_on_temporal(compose: tuple[ComposeProject, Endpoints]) -> None:
    project, endpoints = compose

    def all_healthy() -> bool:
        ids = project("ps", "-q").split()
        states = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
        running = [s["State"] for s in states if s["State"]["Status"] == "running"]
        return len(running) == len(ids) - 1 and all(  # all but airflow-init, which exited after migrating
            state.get("Health", {}).get("Status", "healthy") == "healthy" for state in running
        )

    eventually(all_healthy, 300, "every compose service running and healthy", interval=2)
    api = AirflowRest(endpoints.api_url)
    eventually(
        lambda: "e2e_pipeline" in {dag["dag_id"] for dag in api.request("GET", "dags?limit=100")["dags"]},
        300,
        "e2e_pipeline to be parsed",
        interval=2,
    )
    run_id = api.trigger("e2e_pipeline", {"seconds": 1})
    deployment = Deployment(endpoints, stack=None, api=api)  # type: ignore[arg-type]  # no harness stack here
    assert deployment.wait_for_run_state("e2e_pipeline", run_id, {"success", "failed"}, timeout=300) == "success"
    assert deployment.workflow_status("e2e_pipeline", run_id) == WorkflowExecutionStatus.COMPLETED
