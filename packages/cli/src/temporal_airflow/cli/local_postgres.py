"""A local PostgreSQL server from the binaries of the ``pgserver`` wheel, on a TCP port of loopback.

Used by ``temporal-airflow up`` and the test harness where no Docker engine is available. It can be
stopped and started again on the same data directory (the tests use that to simulate an outage).
PostgreSQL refuses to run as root; when run as root the server runs as a system user,
``TEMPORAL_AIRFLOW_PG_SYSTEM_USER`` (default ``pgserver``, as the ``pgserver`` package names it), created
on first use. Several processes may start servers at once on a machine that has no such user yet (the
test suite's workers do): the user is created under a machine-wide lock, once, so every data folder is
owned by the same uid. The server is started here (not by ``pgserver``'s own launcher) so that it dies
with the process that started it (fast shutdown).

The superuser has a random password (SCRAM over TCP, never ``trust``), kept in ``password`` beside the
data folder, readable by its owner only: other users of the machine cannot connect as it.

The port is chosen here and may be taken by someone else before the server binds it: a server that
exits because its port is in use is started again on another port, and it counts as ready only when
``pg_isready`` answers *and* the listener on that port is the server this object started.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporal_airflow.cli.listeners import START_ATTEMPTS, bind_failed, candidate_port, listens_on, log_tail
from temporal_airflow.cli.processes import die_with_parent

_DB_USER = "postgres"
#: The system user a root-started server runs as (created on first use).
SYSTEM_USER_SETTING = "TEMPORAL_AIRFLOW_PG_SYSTEM_USER"
DEFAULT_SYSTEM_USER = "pgserver"
#: Serialises the creation of system users among every process of this machine.
_USERADD_LOCK = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (never through a link planted there)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def system_user() -> pwd.struct_passwd:
    """The system user a server started by root runs as, created once even when many processes ask at once.

    ``useradd`` run twice at the same moment for the same name can leave two entries for one name and
    hand out a uid that ``/etc/passwd`` then no longer maps: the check and the creation happen under an
    exclusive lock on a machine-wide lock file.
    """
    name = os.environ.get(SYSTEM_USER_SETTING) or DEFAULT_SYSTEM_USER
    with open(_USERADD_LOCK / "temporal-airflow-useradd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if created.returncode != 0:
            raise RuntimeError(f"cannot create the system user {name!r} for PostgreSQL: {created.stderr.strip()}")
        return pwd.getpwnam(name)


def _bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


@dataclass
class LocalPostgres:
    """``start()`` initialises ``datadir`` on first use; ``stop()`` / ``start()`` keep the data."""

    datadir: Path
    port: int = field(default_factory=candidate_port)
    database: str = "airflow"
    process: subprocess.Popen[bytes] | None = None
    _run_as: dict[str, Any] = field(default_factory=dict)
    #: Clients know the port after the first start: a restart keeps it.
    _started_once: bool = False

    @property
    def password_file(self) -> Path:
        return Path(self.datadir) / "password"

    @property
    def password(self) -> str:
        """The superuser's password: random, made at first start, kept readable by its owner only."""
        return self.password_file.read_text().strip()

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for Airflow (psycopg2 driver)."""
        login = f"{_DB_USER}:{self.password}" if self.password_file.exists() else _DB_USER  # before its first start
        return f"postgresql+psycopg2://{login}@127.0.0.1:{self.port}/{self.database}"

    def client_env(self) -> dict[str, str]:
        """Environment for ``psql`` and other libpq clients of this server."""
        return {**os.environ, "PGPASSWORD": self.password}

    def _prepare(self) -> None:
        self.datadir = Path(self.datadir)
        if os.geteuid() == 0:
            entry = system_user()
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
        pgdata = self.datadir / "pgdata"
        pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            # At every start: a folder above may have lost its search bit since (pytest's base folder does).
            self._make_traversable(self.datadir)
        if (pgdata / "PG_VERSION").exists():
            return
        if self._run_as:
            for path in (self.datadir, pgdata):
                os.chown(path, self._run_as["user"], self._run_as["group"])
        self._initdb(pgdata)

    def _initdb(self, pgdata: Path) -> None:
        """A new cluster whose superuser needs a password over TCP (SCRAM): other local users of the machine
        cannot connect as it, as they could with ``trust``."""
        write_private(self.password_file, secrets.token_urlsafe(24))
        pwfile = self.datadir / ".initdb-password"
        write_private(pwfile, self.password)
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        try:
            initdb = subprocess.run(
                [
                    _bin("initdb"), "-D", str(pgdata), "-U", _DB_USER, "--pwfile", str(pwfile),
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync",
                ],
                capture_output=True,
                text=True,
                **self._run_as,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb of {pgdata} failed: {(initdb.stderr or initdb.stdout).strip()[-2000:]}")

    @staticmethod
    def _make_traversable(path: Path) -> None:
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    @property
    def log(self) -> Path:
        return self.datadir / "postgres.log"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """Start the server (initialising the data folder on first use) and wait until it is ready.

        On the first start a port found taken is replaced by another; a restart keeps its port.
        """
        self._prepare()
        attempts = 1 if self._started_once else START_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                self.port = candidate_port()
            if self._start_once(timeout):
                self._started_once = True
                return self
        raise RuntimeError(f"postgres could not bind a port on 127.0.0.1; see {self.log}")

    def _start_once(self, timeout: float) -> bool:
        """True once ready; False when its port was taken (it exited); raises on any other failure."""
        since = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    _bin("postgres"),
                    "-D", str(self.datadir / "pgdata"),
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
                if bind_failed(self.log, since):
                    return False
                raise RuntimeError(f"postgres exited with code {self.process.returncode}: {log_tail(self.log, since)}")
            if listens_on(self.process.pid, self.port) and self._accepts_connections():
                self._ensure_database()
                return True
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres did not become ready within {timeout}s; see {self.log}")

    def _accepts_connections(self) -> bool:
        ready = subprocess.run(
            [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _DB_USER], capture_output=True
        )
        return ready.returncode == 0

    def psql(self, sql: str) -> str:
        """Run ``sql`` with ``psql`` as the superuser; its unaligned output."""
        done = subprocess.run(
            [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _DB_USER, "-tA", "-c", sql],
            capture_output=True,
            text=True,
            env=self.client_env(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout.strip()

    def _ensure_database(self) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'") != "1":
            self.psql(f'CREATE DATABASE "{self.database}"')

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
