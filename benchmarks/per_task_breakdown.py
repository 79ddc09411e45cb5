"""Where the time of one task of a no-op chain goes, read from the workflow's own history.

    uv run python benchmarks/per_task_breakdown.py [--tasks 50] [--runs 3]

A chain runs one try at a time, so every task's cycle is a sequence of history events:

* ``turn``: the previous try's ``ActivityTaskCompleted`` to this try's ``ActivityTaskScheduled``:
  the workflow task that recorded the previous outcome and started this try, split into
  ``wft wait`` (scheduled to picked up by the workflow worker) and ``wft run`` (picked up to completed:
  the activation's CPU and its reply);
* ``dispatch``: ``ActivityTaskScheduled`` to the activity worker's pick-up (``ActivityTaskStarted``);
* ``activity``: pick-up to ``ActivityTaskCompleted``, split into ``in-task`` (the try's own start and
  end dates, as Airflow's task runner reports them) and everything else on the activity worker
  (decoding, the task host, fork, parsing the DAG file, the Task SDK's set-up, the reply).

Once per run: ``run start`` (the workflow's start to its first try's ``ActivityTaskScheduled``: the DAG
file's parse on an activity worker and the in-workflow DagRun's creation) and ``run end`` (the last
try's end to the workflow's completion).

Prints the median of each phase in ms per task over the measured runs (after one warm-up run).
Figures depend on the machine; compare them with one another, not with another machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from orchestration_overhead import DAG_TEMPLATE
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from temporal_airflow.models import RUN_TASK_ACTIVITY


@dataclass
class Phases:
    """Per-task durations (ms) of one phase, over every task of every measured run."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.samples.setdefault(name, []).append(ms)

    def median(self, name: str) -> float:
        return statistics.median(self.samples.get(name) or [0.0])

    def p90(self, name: str) -> float:
        values = sorted(self.samples.get(name) or [0.0])
        return values[int(0.9 * (len(values) - 1))]


def split(history: WorkflowHistory, in_task_ms: dict[str, float], phases: Phases) -> None:
    """Add every task's cycle in ``history`` to ``phases`` (tasks named by activity id)."""
    scheduled_at: dict[int, float] = {}
    activity_of: dict[int, str] = {}
    started_at: dict[int, float] = {}
    wft_scheduled = wft_started = run_started = 0.0
    last_completed: float | None = None
    turn_wft: tuple[float, float] | None = None
    for event in history.events:
        at = event.event_time.ToMilliseconds()
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wft_scheduled = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            wft_started = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            turn_wft = (wft_started - wft_scheduled, at - wft_started)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            run_started = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED and last_completed is not None:
            phases.add("run end", at - last_completed)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name != RUN_TASK_ACTIVITY:
                continue  # the DAG file's parse: part of the run's start
            scheduled_at[event.event_id] = at
            activity_of[event.event_id] = attrs.activity_id
            if not scheduled_at.keys() - {event.event_id}:
                phases.add("run start", at - run_started)
            if last_completed is not None and turn_wft is not None:
                phases.add("turn", at - last_completed)
                phases.add("wft wait", turn_wft[0])
                phases.add("wft run", turn_wft[1])
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled = event.activity_task_started_event_attributes.scheduled_event_id
            if scheduled not in scheduled_at:
                continue
            started_at[scheduled] = at
            phases.add("dispatch", at - scheduled_at[scheduled])
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = event.activity_task_completed_event_attributes.scheduled_event_id
            if scheduled not in started_at:
                continue
            ran = at - started_at[scheduled]
            task = activity_of[scheduled].split("#")[0]
            phases.add("activity", ran)
            if task in in_task_ms:
                phases.add("in-task", in_task_ms[task])
                phases.add("activity, not in-task", ran - in_task_ms[task])
            last_completed = at


async def measure(dag_file: Path, runs: int) -> tuple[Phases, list[float]]:
    from temporal_airflow.activities.task_host_client import warm_up
    from temporal_airflow.activities.worker import create_activity_worker, create_service_worker
    from temporal_airflow.cli.dev_server import DevServer
    from temporal_airflow.models import STANDALONE_WORKFLOW, DagExecutionInput, DagExecutionResult
    from temporal_airflow.models.runtime import connect_client
    from temporal_airflow.workflows.worker import create_workflow_worker

    phases = Phases()
    walls: list[float] = []
    with DevServer() as server:
        await asyncio.sleep(0.5)
        client: Client = await connect_client(server.address)
        await warm_up()
        async with (
            create_workflow_worker(client, "bench-wf"),
            create_activity_worker(client, "bench-act"),
            create_service_worker(client, "bench-act"),
        ):
            for run in range(runs + 1):
                handle = await client.start_workflow(
                    STANDALONE_WORKFLOW,
                    DagExecutionInput(dag_path=str(dag_file), activity_task_queue="bench-act"),
                    id=f"breakdown-{uuid.uuid4().hex[:8]}",
                    task_queue="bench-wf",
                    result_type=DagExecutionResult,
                )
                result = await handle.result()
                if run == 0:
                    continue  # warm-up
                history = await handle.fetch_history()
                events = history.events
                walls.append((events[-1].event_time.ToMilliseconds() - events[0].event_time.ToMilliseconds()) / 1000)
                in_task = {
                    t.task_id: (t.end_date - t.start_date).total_seconds() * 1000
                    for t in result.tasks
                    if t.start_date and t.end_date
                }
                split(history, in_task, phases)
    return phases, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TEMPORAL_AIRFLOW_TASK_LOG_LEVEL", "INFO")
    dag_file = Path(tempfile.mkdtemp(prefix="bench-dags-")) / "noop_chain.py"
    dag_file.write_text(DAG_TEMPLATE.format(tasks=args.tasks))
    phases, walls = asyncio.run(measure(dag_file, args.runs))
    print(f"\n{args.tasks}-task no-op chain, {args.runs} runs; ms per task")
    print(f"  {'phase':<24}{'median':>8}{'p90':>8}")
    for name in ("turn", "wft wait", "wft run", "dispatch", "activity", "in-task", "activity, not in-task"):
        print(f"  {name:<24}{phases.median(name):>8.1f}{phases.p90(name):>8.1f}")
    cycle = phases.median("turn") + phases.median("dispatch") + phases.median("activity")
    print(f"  {'cycle (turn+dispatch+activity)':<32}{cycle:>8.1f}")
    print("ms per run")
    for name in ("run start", "run end"):
        print(f"  {name:<24}{phases.median(name):>8.1f}")
    print(f"  run wall s (history): {', '.join(f'{w:.2f}' for w in walls)}")


if __name__ == "__main__":
    main()
