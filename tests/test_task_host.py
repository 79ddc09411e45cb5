"""The task host forks a DAG's tries from a process that parsed the DAG file once: each try still starts
from a pristine parse, an edited file is parsed again, and a file that kills its parser fails its own
tries only. A deferred task's trigger runs in a child of the host too, to its first event. A cancelled try
gets Airflow's kill path to its end."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from temporal_airflow.activities.task_host_client import ChildFailed, run_in_child
from temporal_airflow.models import (
    TASK_PROCESS_DIED_ERROR,
    ActivityTaskInput,
    Deferral,
    RunContext,
    TaskExecutionResult,
    TriggerInput,
    TriggerOutcome,
)

DAG = """
import pendulum
from airflow.sdk import dag, task
{prelude}
SEEN = []

@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def d():
    @task
    def probe() -> str:
        SEEN.append(1)
        return "{answer} " + str(len(SEEN))

    probe()

d()
"""


def write_dag(path: Path, answer: str, prelude: str = "") -> None:
    path.write_text(DAG.format(dag_id=path.stem, answer=answer, prelude=prelude))


def try_input(path: Path) -> ActivityTaskInput:
    now = datetime.now(UTC)
    run = RunContext(
        dag_id=path.stem, run_id=f"manual__{uuid.uuid4().hex}", run_type="manual", run_after=now, start_date=now
    )
    return ActivityTaskInput(
        dag_path=str(path), task_id="probe", map_index=-1, try_number=1, max_tries=0, run=run, upstream_xcoms=[]
    )


async def run_try(path: Path) -> TaskExecutionResult:
    task = try_input(path)
    log_path = str(path.parent / f"{uuid.uuid4().hex}.log")
    result: TaskExecutionResult = await run_in_child("task", task, log_path=log_path, dag_path=str(path))
    return result


def returned(result: TaskExecutionResult) -> str:
    assert result.state == "success", result.error
    return next(x.value_json for x in result.xcoms if x.key == "return_value")


async def test_the_file_is_parsed_once_and_every_try_starts_from_a_pristine_parse(tmp_path: Path) -> None:
    path = tmp_path / f"pristine_{uuid.uuid4().hex[:8]}.py"
    parses = tmp_path / "parses"
    write_dag(path, "first", prelude=f"open({str(parses)!r}, 'a').write('parsed\\n')")
    answers = [returned(await run_try(path)) for _ in range(3)]
    assert answers == ['"first 1"'] * 3  # no try sees what an earlier one left in the DAG's globals
    assert parses.read_text() == "parsed\n"


async def test_an_edited_dag_file_is_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / f"edited_{uuid.uuid4().hex[:8]}.py"
    write_dag(path, "before")
    assert returned(await run_try(path)) == '"before 1"'
    write_dag(path, "after, edited")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert returned(await run_try(path)) == '"after, edited 1"'


async def test_a_dag_file_that_kills_its_parser_fails_its_own_tries_only(tmp_path: Path) -> None:
    deadly = tmp_path / f"deadly_{uuid.uuid4().hex[:8]}.py"
    write_dag(deadly, "never", prelude="import os\nos._exit(3)")
    for _ in range(2):  # the second try goes straight to a plain fork
        with pytest.raises(ChildFailed) as failed:
            await run_try(deadly)
        assert failed.value.kind == TASK_PROCESS_DIED_ERROR
    healthy = tmp_path / f"healthy_{uuid.uuid4().hex[:8]}.py"
    write_dag(healthy, "alive")
    assert returned(await run_try(healthy)) == '"alive 1"'


async def test_a_trigger_runs_to_its_first_event_in_a_child(tmp_path: Path) -> None:
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    from airflow.sdk.serde import deserialize, serialize

    path = tmp_path / f"deferring_{uuid.uuid4().hex[:8]}.py"
    write_dag(path, "unused")
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    classpath, kwargs = DateTimeTrigger(moment=moment).serialize()
    deferral = Deferral(classpath=classpath, trigger_kwargs=serialize(kwargs), next_method="execute_complete")
    trigger = TriggerInput(task=try_input(path), deferral=deferral)
    log_path = str(tmp_path / "trigger.log")
    outcome: TriggerOutcome = await run_in_child("trigger", trigger, log_path=log_path, dag_path=str(path))
    assert deserialize(outcome.payload) == moment


STUBBORN = """
import os, time
import pendulum
from airflow.sdk import BaseOperator, dag

class Stubborn(BaseOperator):
    def execute(self, context):
        open({record!r}, "a").write(f"start {{os.getpid()}}\\n")
        while True:
            time.sleep(0.1)  # goes on after SIGTERM: only SIGKILL ends it

    def on_kill(self):
        open({record!r}, "a").write(f"killed {{time.time()}}\\n")

@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def d():
    Stubborn(task_id="probe")

d()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_cancelled_try_gets_airflows_kill_path_to_its_end_even_when_cancelled_again(tmp_path: Path) -> None:
    """SIGTERM (``on_kill``), then SIGKILL after the grace; a second cancellation (the SDK cancels again
    when a heartbeat finds the workflow gone) must not cut the kill path short."""
    from temporal_airflow.activities.task_host_client import KILL_GRACE

    path, record = tmp_path / f"stubborn_{uuid.uuid4().hex[:8]}.py", tmp_path / "record"
    path.write_text(STUBBORN.format(dag_id=path.stem, record=str(record)))
    running = asyncio.create_task(run_try(path))
    deadline = time.monotonic() + 120
    while not (record.exists() and record.read_text().startswith("start")):
        assert time.monotonic() < deadline, "the try did not start"
        await asyncio.sleep(0.1)
    pid = int(record.read_text().split()[1])
    cancelled = time.time()
    running.cancel()
    await asyncio.sleep(0.5)
    running.cancel()  # a second reason, while the kill path waits out its grace
    with pytest.raises(asyncio.CancelledError):
        await running
    ended = time.time()
    lines = record.read_text().splitlines()
    assert lines[1].startswith("killed") and float(lines[1].split()[1]) - cancelled < 2
    assert not _alive(pid)
    assert KILL_GRACE - 1 < ended - cancelled < KILL_GRACE + 5
