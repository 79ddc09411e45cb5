"""What ``temporal-airflow run`` prints: live progress, the final report, one line for an error.

The terminal is kept for these lines: Airflow's own output goes to a log file (see :func:`route_output`).
``--output json`` prints exactly one document on stdout, for scripts and CI, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


def _xcom_value(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        return value_json


def _label(task: Any) -> str:
    return task.task_id if task.map_index < 0 else f"{task.task_id}[{task.map_index}]"


_UNFINISHED = {"scheduled", "queued", "running", "deferred", "restarting", "up_for_reschedule"}


@dataclass(frozen=True)
class _Event:
    at: datetime
    state: str
    label: str
    try_number: int
    seconds: float | None


class ProgressPrinter:
    """Prints task tries' state changes in the order they happened; a finished try with its duration.

    States are polled; a try that started and finished between two polls still gets its ``running``
    line, at its start date, before its final state.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: dict[tuple[str, int], tuple[str | None, int]] = {}

    def update(self, tasks: list[Any]) -> None:
        events: list[_Event] = []
        for task in tasks:
            key = (task.task_id, task.map_index)
            previous, now = self.seen.get(key), (task.state, task.try_number)
            if task.state is None or previous == now:
                continue
            self.seen[key] = now
            events.extend(self._events(task, ran_before=previous == ("running", task.try_number)))
        for event in sorted(events, key=lambda e: e.at):
            detail = f"try {event.try_number}" + ("" if event.seconds is None else f", {event.seconds:.1f}s")
            print(f"  {event.state:<16} {event.label} ({detail})", file=self.out, flush=True)

    @staticmethod
    def _events(task: Any, ran_before: bool) -> list[_Event]:
        label = _label(task)
        start, end = task.start_date, task.end_date
        if task.state in _UNFINISHED:
            return [_Event(start or datetime.now(UTC), task.state, label, task.try_number, None)]
        seconds = (end - start).total_seconds() if start and end else None
        events = [_Event(end or start or datetime.now(UTC), task.state, label, task.try_number, seconds)]
        if start and not ran_before:
            events.insert(0, _Event(start, "running", label, task.try_number, None))
        return events


@dataclass(frozen=True)
class Streams:
    """Where ``run`` writes: ``out`` the result, ``info`` progress, ``err`` errors (all terminal)."""

    out: TextIO
    info: TextIO
    err: TextIO


def _run_log_path() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").expanduser()
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return home / "logs" / "temporal-airflow" / f"run-{stamp}-{os.getpid()}.log"


def route_output(output: str, verbose: bool) -> tuple[Streams, Path | None]:
    """Keep the terminal for our own lines; send what Airflow and its plugins print to a log file.

    Our streams are private copies of stdout and stderr; file descriptors 1 and 2 then point at the log
    file (with ``verbose``: stay on the terminal, stdout moved to stderr in JSON mode so that stdout
    holds the one document).
    """
    out, err = os.fdopen(os.dup(1), "w"), os.fdopen(os.dup(2), "w")
    streams = Streams(out, err if output == "json" else out, err)
    if verbose:
        if output == "json":
            os.dup2(2, 1)
        return streams, None
    log_path = _run_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return streams, log_path


def report(result: Any, workflow_id: str, link: str | None, output: str, out: TextIO) -> None:
    if output == "json":
        document = {
            "workflow_id": workflow_id,
            "dag_id": result.dag_id,
            "run_id": result.run_id,
            "state": result.state,
            "tasks": {
                _label(t): {
                    "state": t.state,
                    "try_number": t.try_number,
                    "xcoms": {x.key: _xcom_value(x.value_json) for x in t.xcoms},
                    **({"error": t.error} if t.error else {}),
                }
                for t in result.tasks
            },
        }
        json.dump(document, out, indent=2, default=str)
        out.write("\n")
        return
    print(f"\nDAG {result.dag_id}, run {result.run_id}: {result.state.upper()}", file=out)
    width = max([len(t.task_id) for t in result.tasks] + [4])
    for task in result.tasks:
        label = _label(task)
        line = f"  {label:<{width + 4}} {task.state or 'none':<16} try {task.try_number}"
        xcoms = ", ".join(f"{x.key}={x.value_json}" for x in task.xcoms)
        if xcoms:
            line += f"  xcom: {xcoms}"
        print(line, file=out)
        if task.error:
            print(f"  {'':<{width + 4}} error: {task.error.splitlines()[0]}", file=out)
    if link:
        print(f"\nTemporal UI: {link}", file=out)


class RunFailed(RuntimeError):
    """The run's workflow failed (not a task: the workflow itself), with its id."""

    def __init__(self, message: str, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


def report_error(error: BaseException, output: str, streams: Streams, log_path: Path | None) -> None:
    """One clear line on the terminal (and the JSON document) for anything that ended ``run`` early."""
    if isinstance(error, RunFailed):
        message, workflow_id = str(error), error.workflow_id
    else:
        first = (str(error).strip().splitlines() or [""])[0]
        message, workflow_id = f"{type(error).__name__}: {first}" if first else type(error).__name__, None
        traceback.print_exception(error)  # to the log file (fd 2), or the terminal with --verbose
    if output == "json":
        json.dump({"workflow_id": workflow_id, "state": "error", "error": message}, streams.out)
        streams.out.write("\n")
    hint = f" (details in {log_path})" if log_path is not None and not isinstance(error, RunFailed) else ""
    print(f"error: {message}{hint}", file=streams.err, flush=True)
