"""Local PostgreSQL and Temporal dev servers start safely side by side, as a test suite's workers start them.

A machine that never ran the project has no system user for PostgreSQL; several processes that start a
server at the same moment must all end up with one user and servers that work. Ports are chosen before
they are bound, so a server whose port was taken meanwhile must move to another one and never take
someone else's server for its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from temporal_airflow.cli.dev_server import DevServer
from temporal_airflow.cli.local_postgres import SYSTEM_USER_SETTING, LocalPostgres
from temporal_airflow.cli.local_postgres import _bin as pg_binary

pytestmark = pytest.mark.integration

#: Waits for the start signal (a file), then starts a server on its own data folder and checks it answers.
START_ONE = """
import sys, time
from pathlib import Path
from temporal_airflow.cli.local_postgres import LocalPostgres
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
pg = LocalPostgres(Path(sys.argv[1])).start()
try:
    print(pg.psql("SHOW data_directory"))
finally:
    pg.stop()
"""


@pytest.fixture
def new_system_user() -> Iterator[str]:
    """A system user name that does not exist yet; removed afterwards."""
    name = f"tapg-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["userdel", name], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="a system user is created only when the server is started as root")
def test_servers_started_at_once_on_a_new_system_user_all_work(new_system_user: str) -> None:
    # Not under pytest's base folder: a pytest session that starts meanwhile takes its search bit away.
    root = Path(tempfile.mkdtemp(prefix="temporal-airflow-pg-"))
    try:
        _start_servers_at_once(root, new_system_user)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start_servers_at_once(root: Path, new_system_user: str) -> None:
    go = root / "go"
    env = {**os.environ, SYSTEM_USER_SETTING: new_system_user}
    folders = [root / f"pg{i}" for i in range(3)]
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", START_ONE, str(folder), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    go.touch()
    outputs = [starter.communicate(timeout=180) for starter in starters]
    for starter, (_out, err) in zip(starters, outputs, strict=True):
        assert starter.returncode == 0, err[-3000:]
    assert sorted(out.strip() for out, _ in outputs) == sorted(str(folder / "pgdata") for folder in folders)
    owner = pwd.getpwnam(new_system_user).pw_uid
    assert all((folder / "pgdata").stat().st_uid == owner for folder in folders)
    assert [entry.pw_name for entry in pwd.getpwall()].count(new_system_user) == 1


def _taken_port() -> tuple[socket.socket, int]:
    """A port that something else (not the server under test) listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_postgres_whose_port_was_taken_moves_to_another_and_keeps_it_on_restart(tmp_path: Path) -> None:
    sock, taken = _taken_port()
    with sock:
        pg = LocalPostgres(tmp_path / "pg", port=taken).start()
        try:
            assert pg.port != taken
            moved = pg.port
            pg.stop()
            pg.start()
            assert pg.port == moved
        finally:
            pg.stop()


def test_a_dev_server_whose_port_was_taken_moves_to_another(tmp_path: Path) -> None:
    sock, taken = _taken_port()
    with sock, DevServer(port=taken, ui=True) as server:
        assert server.port != taken and server.ui_port is not None


def test_postgres_asks_for_the_password_its_owner_keeps(tmp_path: Path) -> None:
    pg = LocalPostgres(tmp_path / "pg").start()
    try:
        assert pg.password_file.stat().st_mode & 0o777 == 0o600
        assert pg.psql("SELECT 1") == "1"
        psql = [pg_binary("psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c", "SELECT 1"]
        without = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
        for env, refusal in (
            ({**without, "PGPASSWORD": "not-the-password"}, "password authentication failed"),
            (without, "no password supplied"),
        ):
            denied = subprocess.run([*psql, "-w"], capture_output=True, text=True, env=env)
            assert denied.returncode != 0 and refusal in denied.stderr
    finally:
        pg.stop()
