"""The e2e deployment as containers: ``docker/compose.yaml``'s services, started from the images of ``docker/``.

The harness reads the compose file itself (images, commands, environment, volumes, health checks and
``depends_on`` order), so the stack under test and the one users start with ``docker compose`` cannot
drift apart. It talks to the Docker engine directly (no Testcontainers reaper: Ryuk's image cannot be
pulled where no registry answers) and labels everything it makes with its session, so that ``stop()``
removes every container and volume at the end or on a signal, and a session that was SIGKILLed has its
leftovers removed by the next one.

Host networking: every component listens on one loopback address of the stack's own (127.0.0.x), held
with a lock file for the stack's lifetime, so parallel stacks never collide on ports and no Docker
network, NAT or iptables rule is needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
# compose.yaml's address variables that take the stack's own loopback address on the host's network;
# Temporal's dev server stays on 127.0.0.1 (it dials its own internal services there).
STACK_ADDRESS_VARIABLES = ("LISTEN_ADDRESS", "POSTGRES_HOST", "AIRFLOW_API_HOST", "AIRFLOW_PUBLIC_ADDRESS")
TEMPORAL_ADDRESS_VARIABLES = ("TEMPORAL_HOST", "TEMPORAL_LISTEN_ADDRESS")
SESSION_LABEL = "org.temporal-airflow.e2e.session"
OWNER_LABEL = "org.temporal-airflow.e2e.owner"  # "{hostname}:{pid}" of the pytest process
LOCKS = Path("/tmp/temporal-airflow-e2e-addresses")  # one lock file per 127.0.0.x, held by the stack using it
# Ports the stack listens on at its address; Temporal's dev server listens on 127.0.0.1 (compose.yaml
# says why), on free ports of the stack's own.
STACK_PORTS = (5432, 8080)
TEMPORAL_PORTS = ("TEMPORAL_PORT", "TEMPORAL_UI_PORT", "TEMPORAL_HTTP_PORT")
COMPOSE_IMAGE_VARIABLES = {"postgres": "POSTGRES_IMAGE", "temporal": "TEMPORAL_IMAGE", "airflow": "AIRFLOW_IMAGE"}
COMPOSE_IMAGE_VARIABLES["worker"] = "WORKER_IMAGE"


@functools.cache
def built_images() -> dict[str, str]:
    """``docker/build-images``' tags (building what changed), as the variables compose.yaml takes."""
    result = subprocess.run(
        [sys.executable, str(DOCKER_DIR / "build_images.py"), "--json"], stdout=subprocess.PIPE, text=True, check=True
    )
    tags: dict[str, str] = json.loads(result.stdout)
    return {COMPOSE_IMAGE_VARIABLES[name]: tag for name, tag in tags.items()}


@dataclass
class LoopbackAddress:
    """A 127.0.0.x address with every stack port free, held (a lock file) until ``release()``."""

    address: str
    lock: IO[str]

    @classmethod
    def claim(cls) -> LoopbackAddress:
        candidates = [f"127.0.0.{n}" for n in range(2, 255)]
        random.shuffle(candidates)
        LOCKS.mkdir(exist_ok=True)
        for address in candidates:
            lock = open(LOCKS / address, "w")  # noqa: SIM115 (held for the stack's life)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            if all(port_free(address, port) for port in STACK_PORTS):
                return cls(address, lock)
            lock.close()
        raise RuntimeError("no loopback address 127.0.0.2-254 has the stack's ports free")

    def release(self) -> None:
        self.lock.close()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel has free on 127.0.0.1 now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ``${NAME}`` / ``${NAME:-default}`` substitution, through lists and mappings."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: variables.get(m[1]) or (m[2] or ""), value)
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    return value


def host_network_variables(address: str) -> dict[str, str]:
    """compose.yaml's variables for a host-network stack on ``address``, with Temporal on free ports."""
    variables = dict.fromkeys(STACK_ADDRESS_VARIABLES, address) | dict.fromkeys(TEMPORAL_ADDRESS_VARIABLES, "127.0.0.1")
    return variables | {name: str(port) for name, port in zip(TEMPORAL_PORTS, free_ports(3), strict=True)}


def compose_services(variables: dict[str, str]) -> dict[str, dict[str, Any]]:
    """compose.yaml's services with ``variables`` substituted, in an order that honours ``depends_on``."""
    services: dict[str, dict[str, Any]] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables)["services"]
    ordered: dict[str, dict[str, Any]] = {}

    def visit(name: str) -> None:
        if name not in ordered:
            for dependency in services[name].get("depends_on", {}):
                visit(dependency)
            ordered[name] = services[name]

    for name in services:
        visit(name)
    return ordered


def seconds(duration: str) -> float:
    """A compose duration (``2s``, ``500ms``, ``1m``) in seconds."""
    number, unit = re.fullmatch(r"([\d.]+)(ms|s|m)", duration).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while cleaning up, so that a second Ctrl-C cannot leave containers behind."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_labelled(client: Any, label: str) -> None:
    """Remove every container (with its anonymous volumes) and named volume carrying ``label``."""
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(Exception):  # already being removed
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": label}):
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def reap_orphans(client: Any) -> None:
    """Remove what sessions of this host left behind when they were killed (SIGKILL gives no chance)."""
    hostname = socket.gethostname()
    owners = {c.labels.get(OWNER_LABEL, "") for c in client.containers.list(all=True, filters={"label": OWNER_LABEL})}
    owners |= {v.attrs["Labels"].get(OWNER_LABEL, "") for v in client.volumes.list(filters={"label": OWNER_LABEL})}
    for found in owners:
        host, _, pid = found.rpartition(":")
        if host == hostname and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_labelled(client, f"{OWNER_LABEL}={found}")


@dataclass
class ContainerStack:
    """compose.yaml's services as containers on a loopback address of their own, with the e2e DAGs."""

    workdir: Path
    dags_folder: Path
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    client: Any = None
    address: LoopbackAddress | None = None
    containers: dict[str, Any] = field(default_factory=dict)

    def start(self) -> tuple[str, str]:
        """Start every service; returns the Airflow API URL and the Temporal address."""
        images = built_images()
        self.client = importlib.import_module("docker").from_env()
        reap_orphans(self.client)
        self.address = LoopbackAddress.claim()
        stack_address = self.address.address
        variables = {**images, **host_network_variables(stack_address), "DAGS_FOLDER": str(self.dags_folder)}
        for name, service in compose_services(variables).items():
            for dependency, condition in service.get("depends_on", {}).items():
                self._wait(dependency, condition["condition"])
            self._run(name, service)
        return f"http://{stack_address}:8080", f"127.0.0.1:{variables['TEMPORAL_PORT']}"

    def _run(self, name: str, service: dict[str, Any]) -> None:
        labels = {SESSION_LABEL: self.session, OWNER_LABEL: owner()}
        volumes: dict[str, dict[str, str]] = {}
        for spec in service.get("volumes", []):
            source, target, *mode = spec.split(":")
            if source.startswith((".", "/")):
                source = str((DOCKER_DIR / source).resolve())
            else:
                source = f"temporal-airflow-e2e-{self.session}-{source}"
                if not self.client.volumes.list(filters={"name": source}):
                    self.client.volumes.create(name=source, labels=labels)
            volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
        healthcheck = None
        if check := service.get("healthcheck"):
            interval = int(seconds(check.get("interval", "30s")) * 1e9)
            healthcheck = {"test": check["test"], "interval": interval, "retries": check.get("retries", 3)}
        environment = {key: str(value) for key, value in service.get("environment", {}).items()}
        self.containers[name] = self.client.containers.run(
            service["image"],
            service.get("command"),
            name=f"temporal-airflow-e2e-{self.session}-{name}",
            environment=environment,
            volumes=volumes,
            network_mode="host",  # compose.yaml's published ports have no meaning here
            init=service.get("init", False),
            healthcheck=healthcheck,
            labels=labels,
            detach=True,
        )

    def _wait(self, name: str, condition: str, timeout: float = 300) -> None:
        container = self.containers[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            state = container.attrs["State"]
            if state["Status"] == "exited":
                if condition == "service_completed_successfully" and state["ExitCode"] == 0:
                    return
                raise RuntimeError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
            healthy = state.get("Health", {}).get("Status") == "healthy"
            if condition == "service_started" or (condition == "service_healthy" and healthy):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{name} did not reach {condition} within {timeout}s:\n{self.logs(name)}")

    def logs(self, name: str, tail: int = 60) -> str:
        try:
            return bytes(self.containers[name].logs(tail=tail)).decode(errors="replace")
        except Exception as error:  # the container is gone
            return f"(no logs: {error})"

    def stop(self) -> None:
        with signals_deferred():
            if self.client is not None:
                remove_labelled(self.client, f"{SESSION_LABEL}={self.session}")
                self.client.close()
                self.client = None
            self.containers.clear()
            if self.address is not None:
                self.address.release()
                self.address = None

    def diagnostics(self) -> str:
        return "\n".join(f"--- {name}\n{self.logs(name)}" for name in self.containers)
