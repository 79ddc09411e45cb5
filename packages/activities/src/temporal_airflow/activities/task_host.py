"""The task host: a warm, single-threaded process that forks one child per task try.

Importing Airflow takes seconds; forking an interpreter that already has it takes milliseconds. The
activity worker is multi-threaded (Temporal's core runs threads), so it must not fork itself; instead
it starts this host once (``python -m temporal_airflow.activities.task_host``) and asks it, over
stdin/stdout JSON lines, to fork children:

* request  ``{"id", "kind", "payload_path", "result_path", "log_path", "dag_path"}`` (``dag_path`` may be null)
* replies  ``{"id", "pid"}`` when the child started, ``{"id", "exit"}`` when it ended.

Payloads and results are pickles in files the worker owns. When its stdin closes (the worker died),
the host terminates its children and exits, so a crashed worker never leaves tasks running.

Parsing the DAG file (importing what it imports, building its tasks) is most of a short try's cost, so a
request naming its DAG file goes to that file's *zygote*: a child of the host that parsed the file once
(per path, modification time and size: an edited file gets a new zygote) and forks the children (the
run's DAG parse, its tries, its triggers), each from a pristine copy of the parsed DAGs; it keeps one
spare child forked ahead, and a child reports its own end once its result is written, so neither a fork
nor a big process's teardown sits between two tasks. The parse happens outside the host, so a DAG file
that crashes or hangs on import never takes the host, or other DAGs' tries, down: a zygote that dies
hands the requests it had not started back to the host, which forks them the plain way (they parse the
file themselves and report what went wrong), and that file gets no zygote again. A few zygotes are kept,
the least recently used retired first. Child exits wake the loops through ``SIGCHLD``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import select
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from temporal_airflow.models.processes import die_with_parent

#: DAG files with a zygote at once, at most.
MAX_ZYGOTES = 8

#: A request as read from the worker (or handed on to a zygote).
Request = dict[str, Any]
#: Which parsed DAG file a zygote holds: its path, modification time (ns) and size.
DagKey = tuple[str, int, int]

_stop: list[int] = []


def _child(request: Request, replies: int) -> int:
    """Run the request and write its result; then report it ended (exit 0) on ``replies`` itself, so the
    worker goes on while this big process is still being torn down."""
    from temporal_airflow.activities.task_process import child_main

    with open(request["payload_path"], "rb") as fh:
        payload = pickle.load(fh)
    outcome = child_main(request["kind"], payload, request["log_path"])
    tmp = request["result_path"] + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(outcome, fh)
    os.replace(tmp, request["result_path"])
    sys.stdout.flush()
    sys.stderr.flush()
    _send(replies, {"id": request["id"], "exit": 0})
    return 0


def _wake_on_signals() -> int:
    """A pipe that becomes readable when a signal arrives (a child ended, SIGTERM); its read end."""
    readable, writable = os.pipe()
    os.set_blocking(readable, False)
    os.set_blocking(writable, False)
    signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, _frame: None)
    signal.signal(signal.SIGTERM, lambda signum, _frame: _stop.append(signum))
    return readable


def _drain(fd: int) -> bytes:
    """Whatever ``fd`` (non-blocking) holds now; ``b""`` at its end or when empty."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return data


def _send(fd: int, message: dict[str, Any]) -> None:
    """One line in one write: lines from several writers never interleave (a line is far below PIPE_BUF)."""
    os.write(fd, (json.dumps(message) + "\n").encode())


@dataclass
class _Lines:
    """JSON lines arriving on a pipe."""

    fd: int
    buffer: bytes = b""
    closed: bool = False

    def read(self) -> list[Request]:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            self.closed = True
        return self._split(chunk)

    def read_rest(self) -> list[Request]:
        return self._split(_drain(self.fd))

    def _split(self, chunk: bytes) -> list[Request]:
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def _fork_try(replies: int, request: Request | None = None) -> tuple[int, int | None]:
    """Fork the child of one request, in its own process group, dying with its parent. Without a request,
    a *spare*: it waits for its request on a pipe (the write end is returned) and exits at the pipe's end.

    A child that exits 0 has reported its end on ``replies`` already; its parent reports other exits.
    """
    readable, writable = (None, None) if request is not None else os.pipe()
    arm_death_signal = die_with_parent(signal.SIGKILL)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        arm_death_signal()
        code = 1
        try:
            if readable is not None and writable is not None:
                os.close(writable)
                request = _await_request(readable)
            code = 0 if request is None else _child(request, replies)
        finally:
            os._exit(code)
    if readable is not None:
        os.close(readable)
    return pid, writable


def _await_request(fd: int) -> Request | None:
    """A spare's request, or ``None`` when its zygote closed the pipe without one."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    request: Request = json.loads(data)
    return request


def _reaped() -> list[tuple[int, int]]:
    """Children of this process that ended since last asked: (pid, exit code)."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, os.waitstatus_to_exitcode(status)))


def _zygote(requests: int, replies: int, dag_path: str) -> None:
    """Parse the DAG, then hand each request to a spare try forked ahead (and fork the next spare), until
    told to retire (and its tries ended) or killed."""
    from temporal_airflow.activities.dag_loading import parse_ahead

    wake = _wake_on_signals()
    parse_ahead(dag_path)
    gc.freeze()  # the parsed DAG too: see serve()
    lines = _Lines(requests)
    children: dict[int, str] = {}
    spare_pid, spare = _fork_try(replies)
    retiring = False
    while not _stop and not (retiring and not children):
        readable, _, _ = select.select([requests, wake], [], [], 1.0)
        _drain(wake)
        if requests in readable:
            for request in lines.read():
                if request.get("retire"):
                    retiring = True
                    continue
                children[spare_pid] = request["id"]
                _send(replies, {"id": request["id"], "pid": spare_pid})
                assert spare is not None
                _send(spare, request)
                os.close(spare)
                spare_pid, spare = _fork_try(replies)
            retiring = retiring or lines.closed
        for pid, code in _reaped():
            if (request_id := children.pop(pid, None)) is not None and code != 0:
                _send(replies, {"id": request_id, "exit": code})
    if spare is not None:
        os.close(spare)
    for pid in [spare_pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)


@dataclass
class _Zygote:
    """The host's side of one zygote."""

    key: DagKey
    pid: int
    requests: int
    replies: _Lines
    #: Handed to the zygote, not started yet (a zygote that dies hands them back).
    waiting: dict[str, Request] = field(default_factory=dict)
    #: Started by the zygote, not ended yet.
    running: set[str] = field(default_factory=set)
    retired: bool = False
    last_used: int = 0


class _Host:
    """Routes the worker's requests to zygotes or forks them itself; forwards every reply."""

    def __init__(self, replies: Any) -> None:
        self._replies = replies
        self.children: dict[int, str] = {}
        self.zygotes: dict[int, _Zygote] = {}
        self.without_zygote: set[DagKey] = set()
        self._uses = 0

    def reply(self, message: dict[str, Any]) -> None:
        self._replies.write(json.dumps(message) + "\n")
        self._replies.flush()

    def start(self, request: Request) -> None:
        key = _dag_key(request.get("dag_path"))
        if key is None or key in self.without_zygote:
            self._fork(request)
            return
        zygote = next((z for z in self.zygotes.values() if z.key == key and not z.retired), None) or self._spawn(key)
        self._uses += 1
        zygote.last_used = self._uses
        zygote.waiting[request["id"]] = request
        with contextlib.suppress(OSError):  # a zygote that just died hands it back when reaped
            _send(zygote.requests, request)

    def _fork(self, request: Request) -> None:
        pid, _ = _fork_try(self._replies.fileno(), request)
        self.children[pid] = request["id"]
        self.reply({"id": request["id"], "pid": pid})

    def _spawn(self, key: DagKey) -> _Zygote:
        active = [z for z in self.zygotes.values() if not z.retired]
        for old in active:
            if old.key[0] == key[0]:
                self._retire(old)  # the file changed: its tries to come parse the new version
        active = [z for z in active if not z.retired]
        if len(active) >= MAX_ZYGOTES:
            self._retire(min(active, key=lambda z: z.last_used))
        to_zygote, from_host = os.pipe()
        from_zygote, to_host = os.pipe()
        arm_death_signal = die_with_parent(signal.SIGKILL)
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            arm_death_signal()
            code = 1
            try:
                _zygote(to_zygote, to_host, key[0])
                code = 0
            finally:
                os._exit(code)
        os.close(to_zygote)
        os.close(to_host)
        os.set_blocking(from_zygote, False)
        zygote = _Zygote(key=key, pid=pid, requests=from_host, replies=_Lines(from_zygote))
        self.zygotes[pid] = zygote
        return zygote

    def _retire(self, zygote: _Zygote) -> None:
        zygote.retired = True
        with contextlib.suppress(OSError):
            _send(zygote.requests, {"retire": True})

    @property
    def zygote_replies(self) -> list[int]:
        return [z.replies.fd for z in self.zygotes.values()]

    def forward(self, fd: int) -> None:
        zygote = next(z for z in self.zygotes.values() if z.replies.fd == fd)
        self._forward(zygote, zygote.replies.read())

    def _forward(self, zygote: _Zygote, messages: list[Request]) -> None:
        for message in messages:
            if "pid" in message:
                zygote.waiting.pop(message["id"], None)
                zygote.running.add(message["id"])
            else:
                zygote.running.discard(message["id"])
            self.reply(message)

    def reap(self) -> None:
        for pid, code in _reaped():
            if (request_id := self.children.pop(pid, None)) is not None:
                if code != 0:
                    self.reply({"id": request_id, "exit": code})
            elif (zygote := self.zygotes.pop(pid, None)) is not None:
                self._zygote_ended(zygote)

    def _zygote_ended(self, zygote: _Zygote) -> None:
        self._forward(zygote, zygote.replies.read_rest())
        os.close(zygote.requests)
        os.close(zygote.replies.fd)
        if not zygote.retired:
            self.without_zygote.add(zygote.key)
        for request_id in sorted(zygote.running):
            self.reply({"id": request_id, "exit": -signal.SIGKILL})  # they died with their zygote
        for request in zygote.waiting.values():
            self._fork(request)

    def stop(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        for pid in self.zygotes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _dag_key(dag_path: str | None) -> DagKey | None:
    """The zygote a DAG file's children go to; ``None`` (fork plainly) when the file cannot be read."""
    if not dag_path:
        return None
    try:
        stat = os.stat(dag_path)
    except OSError:
        return None
    return dag_path, stat.st_mtime_ns, stat.st_size


def serve() -> None:
    """Read requests until stdin closes; start a child for each."""
    # Replies get a private copy of stdout; anything else printed (library logs) goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import temporal_airflow.activities.task_process  # noqa: F401  (warm the imports)
    from temporal_airflow.activities.preload import preload

    die_with_parent(signal.SIGTERM, parent=os.getppid())()
    wake = _wake_on_signals()
    preload()
    # What the host imported is shared by every child it forks: keep it out of the garbage collector's
    # full passes, which would otherwise walk all of Airflow's objects (~0.4 s of CPU) inside a try and
    # copy every page it touches out of the shared memory.
    gc.freeze()
    host = _Host(replies)
    stdin = _Lines(sys.stdin.fileno())
    while not _stop and not stdin.closed:
        readable, _, _ = select.select([stdin.fd, wake, *host.zygote_replies], [], [], 1.0)
        _drain(wake)
        for fd in readable:
            if fd == stdin.fd:
                for request in stdin.read():
                    host.start(request)
            elif fd != wake:
                host.forward(fd)
        host.reap()
    host.stop()


if __name__ == "__main__":
    serve()
