"""The activity worker's side of the task host: run work in a fresh child of it, heartbeating and
honouring cancellation meanwhile.

:mod:`temporal_airflow.activities.task_host` is the process that forks a child per try (or trigger, or
DAG-file parse); :class:`TaskHost` starts it (one per event loop), sends it requests and waits for their
children, and :func:`run_in_child` is what the activities call. A child that dies without an outcome is a
:class:`ChildFailed` of kind ``TaskProcessDied``, with its exit code and the end of its log.

A cancelled activity (a user's mark or clear, its run marked success/failed, its workflow cancelled, or
terminated: the heartbeat Temporal refuses because the workflow is gone cancels the activity too) gives
its child Airflow's kill path: SIGTERM to the child's process group (Airflow's task runner calls the
operator's ``on_kill``), SIGKILL :data:`KILL_GRACE` seconds later if it is still there; the activity
ends (cancelled) once the child has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import sys
import tempfile
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from temporalio import activity

from temporal_airflow.activities.task_env import task_environment
from temporal_airflow.models import TASK_PROCESS_DIED_ERROR

#: How often a running try tells Temporal it is alive, and so how soon it learns it was cancelled (a run
#: cancelled, a task marked in Airflow): Temporal delivers a cancellation only in a heartbeat's reply.
HEARTBEAT_EVERY = timedelta(seconds=1)


class ChildFailed(Exception):
    """The child reported an error (``kind`` says which) or died without answering."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TaskHost:
    """Client side of :mod:`temporal_airflow.activities.task_host`, one per event loop."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._waiters: dict[str, tuple[asyncio.Future[int], asyncio.Future[int]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.workdir = tempfile.mkdtemp(prefix="temporal-airflow-tasks-")

    async def ensure_started(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                env = task_environment()  # no Temporal or encryption secrets for task code
                if "TEMPORAL_AIRFLOW_TASK_LOG_LEVEL" in env:
                    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = env["TEMPORAL_AIRFLOW_TASK_LOG_LEVEL"]
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "temporal_airflow.activities.task_host",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                )
                self._reader = asyncio.create_task(self._read_replies(self._process))
            return self._process

    async def stop(self) -> None:
        """End the task host (it exits once its stdin closes); the next request starts a new one."""
        async with self._lock:
            process, self._process = self._process, None
            if process is None or process.returncode is not None:
                return
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            started, exited = self._waiters.get(message["id"], (None, None))
            if started is None or exited is None:
                continue
            if "pid" in message and not started.done():
                started.set_result(message["pid"])
            elif "exit" in message and not exited.done():
                exited.set_result(message["exit"])
        for started, exited in self._waiters.values():
            for future in (started, exited):
                if not future.done():
                    future.set_exception(ChildFailed("ChildProcessError", "task host exited"))

    async def run(self, kind: str, payload: Any, log_path: str | None, dag_path: str | None = None) -> Any:
        process = await self.ensure_started()
        request_id = uuid.uuid4().hex
        payload_path = os.path.join(self.workdir, f"{request_id}.in")
        result_path = os.path.join(self.workdir, f"{request_id}.out")
        with open(payload_path, "wb") as fh:
            pickle.dump(payload, fh)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()
        exited: asyncio.Future[int] = loop.create_future()
        self._waiters[request_id] = (started, exited)
        log_path = log_path or os.path.join(self.workdir, f"{request_id}.log")
        request = {
            "id": request_id,
            "kind": kind,
            "payload_path": payload_path,
            "result_path": result_path,
            "log_path": log_path,
            "dag_path": dag_path,
        }
        assert process.stdin is not None
        process.stdin.write((json.dumps(request) + "\n").encode())
        heartbeat = asyncio.create_task(_heartbeat_until_cancelled())
        try:
            try:
                await process.stdin.drain()
                # Shielded: a cancellation must leave the futures to the kill path (cancelling them would
                # make the child look ended, and it would go on running).
                await asyncio.shield(started)
                code = await asyncio.shield(exited)
            except asyncio.CancelledError:
                # Cancelled (a mark, a cancelled run) or the workflow is gone (a failed heartbeat): Airflow's
                # kill path for the child, to its end, whatever else is cancelled meanwhile.
                heartbeat.cancel()
                await _shielded(_terminate(started, exited))
                raise
            if not os.path.exists(result_path):
                raise ChildFailed(TASK_PROCESS_DIED_ERROR, _death_message(code, log_path))
            with open(result_path, "rb") as fh:
                ok, value = pickle.load(fh)
        finally:
            heartbeat.cancel()
            self._waiters.pop(request_id, None)
            for path in (payload_path, result_path):
                if os.path.exists(path):
                    os.unlink(path)
        if not ok:
            raise ChildFailed(*value)
        return value


def _death_message(code: int, log_path: str, tail_lines: int = 20) -> str:
    """Why the process ended with no outcome: its exit code or signal, and the end of its log."""
    how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    try:
        with open(log_path, errors="replace") as fh:
            tail = "".join(fh.readlines()[-tail_lines:]).strip()
    except OSError:
        tail = ""
    message = f"task process {how} without reporting an outcome"
    return f"{message}; last lines of its log ({log_path}):\n{tail[-2000:]}" if tail else message


async def _heartbeat_until_cancelled() -> None:
    """Heartbeat for as long as the try runs, every interval after it was requested (a try shorter than
    that sends none: one RPC less per short task; a cancellation still lands within an interval)."""
    interval = _heartbeat_interval()
    if interval is None:
        return
    while True:
        await asyncio.sleep(interval)
        activity.heartbeat()


#: Seconds between the SIGTERM of a cancelled try's process and its SIGKILL (Airflow's supervisor escalates
#: after 5 s too).
KILL_GRACE = 5.0


async def _shielded(work: Awaitable[None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled again meanwhile (the SDK cancels an activity
    once per reason: a cancel request, then a failed heartbeat once the workflow has closed)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()


async def _terminate(started: asyncio.Future[int], exited: asyncio.Future[int], grace: float = KILL_GRACE) -> None:
    """Airflow's kill path: SIGTERM (Airflow's runner calls the operator's ``on_kill``), SIGKILL after
    ``grace``. A child that was still being started is waited for first, then killed."""
    try:
        pid = await asyncio.wait_for(asyncio.shield(started), timeout=60)
    except (TimeoutError, ChildFailed):
        return  # never started (the task host is gone)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if exited.done():
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout=grace)
            return
        except (TimeoutError, ChildFailed):
            continue


def _heartbeat_interval() -> float | None:
    if not activity.in_activity():
        return None
    timeout: timedelta | None = activity.info().heartbeat_timeout
    if not timeout:
        return None
    # As often as the worker sends them (see ``HEARTBEAT_EVERY``), well within the timeout.
    return max(min(timeout.total_seconds() / 4, HEARTBEAT_EVERY.total_seconds()), 0.2)


_hosts: dict[int, TaskHost] = {}


def task_host() -> TaskHost:
    """The task host of the running event loop."""
    loop_id = id(asyncio.get_running_loop())
    host = _hosts.get(loop_id)
    if host is None:
        host = _hosts[loop_id] = TaskHost()
    return host


async def warm_up() -> None:
    """Start the task host now, so the first task does not wait for Airflow to import."""
    await task_host().ensure_started()


async def run_in_child(kind: str, payload: Any, log_path: str | None = None, dag_path: str | None = None) -> Any:
    """Run ``kind`` (``"task"``, ``"trigger"`` or ``"dag"``) on ``payload`` in a fresh child; return its value.

    ``dag_path`` names the DAG file the child works on: it is forked with the file already parsed.
    """
    return await task_host().run(kind, payload, log_path, dag_path)
