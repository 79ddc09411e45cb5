"""The task host: a warm, single-threaded process that forks one child per task try.

Importing Airflow takes seconds; forking an interpreter that already has it takes milliseconds. The
activity worker is multi-threaded (Temporal's core runs threads), so it must not fork itself; instead
it starts this host once (``python -m temporal_airflow.activities.task_host``) and asks it, over
stdin/stdout JSON lines, to fork children:

* request  ``{"id", "kind", "payload_path", "result_path", "log_path"}``
* replies  ``{"id", "pid"}`` when the child started, ``{"id", "exit"}`` when it ended.

Payloads and results are pickles in files the worker owns. When its stdin closes (the worker died),
the host terminates its children and exits, so a crashed worker never leaves tasks running.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import signal
import sys
from typing import Any


def _child(request: dict[str, Any]) -> int:
    from temporal_airflow.activities.task_process import child_main

    with open(request["payload_path"], "rb") as fh:
        payload = pickle.load(fh)
    outcome = child_main(request["kind"], payload, request["log_path"])
    tmp = request["result_path"] + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(outcome, fh)
    os.replace(tmp, request["result_path"])
    return 0


def _die_with_parent(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig)
    except OSError:
        pass


_replies: Any = None


def _reply(message: dict[str, Any]) -> None:
    _replies.write(json.dumps(message) + "\n")
    _replies.flush()


def serve() -> None:
    """Read requests until stdin closes; fork a child for each."""
    global _replies
    # Replies get a private copy of stdout; anything else printed (library logs) goes to stderr.
    _replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    import temporal_airflow.activities.task_process  # noqa: F401  (warm the imports)
    from temporal_airflow.activities.task_process import preload

    _die_with_parent(signal.SIGTERM)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    preload()
    children: dict[int, str] = {}
    stdin = sys.stdin.fileno()
    buffer = b""
    while not stop:
        readable, _, _ = select.select([stdin], [], [], 0.02)
        if readable:
            chunk = os.read(stdin, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.setpgid(0, 0)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    _die_with_parent(signal.SIGKILL)
                    code = 1
                    try:
                        code = _child(request)
                    finally:
                        os._exit(code)
                children[pid] = request["id"]
                _reply({"id": request["id"], "pid": pid})
        _reap(children)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)


def _reap(children: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request_id = children.pop(pid, None)
        if request_id is not None:
            _reply({"id": request_id, "exit": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
