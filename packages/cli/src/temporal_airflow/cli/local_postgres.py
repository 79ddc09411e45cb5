"""A local PostgreSQL server from the binaries of the ``pgserver`` wheel, on a TCP port of loopback.

Used by ``temporal-airflow up`` and the test harness where no Docker engine is available. It can be
stopped and started again on the same data directory (the tests use that to simulate an outage).
PostgreSQL refuses to run as root; when run as root the server runs as the ``pgserver`` system user
(created if missing, as the ``pgserver`` package itself does). The server is started here (not by
``pgserver``'s own launcher) so that it dies with the process that started it (fast shutdown).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporal_airflow.cli.dev_server import free_port
from temporal_airflow.cli.processes import die_with_parent

_DB_USER = "postgres"


def _bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


@dataclass
class LocalPostgres:
    """``start()`` initialises ``datadir`` on first use; ``stop()`` / ``start()`` keep the data."""

    datadir: Path
    port: int = field(default_factory=free_port)
    database: str = "airflow"
    process: subprocess.Popen[bytes] | None = None
    _run_as: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for Airflow (psycopg2 driver)."""
        return f"postgresql+psycopg2://{_DB_USER}@127.0.0.1:{self.port}/{self.database}"

    def _prepare(self) -> None:
        self.datadir = Path(self.datadir)
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            entry = ensure_user_exists("pgserver")
            assert entry is not None
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        pgdata = self.datadir / "pgdata"
        if (pgdata / "PG_VERSION").exists():
            return
        pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            for path in (self.datadir, pgdata):
                os.chown(path, self._run_as["user"], self._run_as["group"])
            self._make_traversable(self.datadir)
        subprocess.run(
            [_bin("initdb"), "-D", str(pgdata), "-U", _DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **self._run_as,
        )

    @staticmethod
    def _make_traversable(path: Path) -> None:
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        self._prepare()
        pgdata = self.datadir / "pgdata"
        log = open(self.datadir / "postgres.log", "ab")  # noqa: SIM115 - owned by the server process
        self.process = subprocess.Popen(
            [
                _bin("postgres"),
                "-D", str(pgdata),
                "-h", "127.0.0.1",
                "-p", str(self.port),
                "-k", "",  # TCP only: a Unix socket path under a deep work dir can pass 107 bytes
                "-c", "fsync=off",
                "-c", "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT),  # fast shutdown when its starter dies
            **self._run_as,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited; see {self.datadir / 'postgres.log'}")
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _DB_USER],
                capture_output=True,
            )
            if ready.returncode == 0:
                self._ensure_database()
                return self
            time.sleep(0.2)
        raise TimeoutError("postgres did not become ready")

    def _ensure_database(self) -> None:
        psql = [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _DB_USER, "-tA"]
        found = subprocess.run(
            [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            capture_output=True,
            text=True,
            check=True,
        )
        if found.stdout.strip() != "1":
            subprocess.run([*psql, "-c", f'CREATE DATABASE "{self.database}"'], check=True, capture_output=True)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), as ``pg_ctl stop -m fast``."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
