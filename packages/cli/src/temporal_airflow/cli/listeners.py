"""Loopback servers this package starts: a port for each, and proof that the listener is the one started.

A port that is free when chosen can be taken before the server binds it (by a parallel test's server, or
anything else on the machine). So a launcher treats "address already in use" in a server's output as a
reason to start it again on another port (:func:`bind_failed`), and counts a server as ready only when
the process it started, or one of that process's descendants, holds the listening socket
(:func:`listens_on`): a TCP accept on the port proves nothing about whose server answered.
"""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

#: How many ports a launcher tries before it gives up (each collision costs one short-lived start).
START_ATTEMPTS = 5


def candidate_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (it may be taken before it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its descendants listens on TCP ``port``."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections):
            return True
    return False


def bind_failed(log: Path | None, since: int = 0) -> bool:
    """Whether a server's log (from byte ``since``) says that its address was in use."""
    if log is None or not log.exists():
        return False
    with log.open("rb") as fh:
        fh.seek(since)
        return b"address already in use" in fh.read().lower()


def log_tail(log: Path | None, since: int = 0, limit: int = 3000) -> str:
    """The end of what a server wrote to ``log`` since byte ``since`` (for an error message)."""
    if log is None or not log.exists():
        return ""
    with log.open("rb") as fh:
        fh.seek(since)
        return fh.read().decode(errors="replace")[-limit:]
