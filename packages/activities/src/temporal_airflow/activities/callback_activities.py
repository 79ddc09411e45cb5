"""DAG-level callbacks: a finished run's ``on_success_callback`` / ``on_failure_callback``, once.

Airflow decides them: ``DagRun.update_state`` in the workflow hands back a ``DagCallbackRequest`` when it
settles the run's state. This activity runs that request the way Airflow's DAG processor does (its own
``_execute_dag_callbacks``: the DAG parsed from its file, the usual context with the run's last task
instance and the reason), in a fresh Python process so user code never runs inside the worker. A
callback that raises is logged, as under Airflow; only a process that dies is an activity failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_airflow.activities.task_env import task_environment
from temporal_airflow.models import RUN_DAG_CALLBACK_ACTIVITY, DagCallbackInput

#: Log lines of the callback process kept in an activity error.
_ERROR_TAIL = 3000


@activity.defn(name=RUN_DAG_CALLBACK_ACTIVITY)
async def run_dag_callback(callback: DagCallbackInput) -> None:
    """Run the callbacks ``callback`` names in their own process; their output goes to the worker's log."""
    env = task_environment()  # the worker's environment without its Temporal and encryption secrets
    env.update({f"AIRFLOW_VAR_{key.upper()}": value for key, value in callback.variables.items()})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        output, _ = await proc.communicate(json.dumps(dataclasses.asdict(callback)).encode())
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    text = output.decode(errors="replace")
    activity.logger.info("DAG callback output:\n%s", text[-_ERROR_TAIL:])
    if proc.returncode != 0:
        raise ApplicationError(f"DAG callback process exited with code {proc.returncode}:\n{text[-_ERROR_TAIL:]}")


CALLBACK_ACTIVITIES = [run_dag_callback]


def main() -> None:
    """Entry of the callback process: the request on stdin, Airflow's own callback execution."""
    import structlog
    from airflow.callbacks.callback_requests import DagCallbackRequest
    from airflow.dag_processing.dagbag import DagBag
    from airflow.dag_processing.processor import _execute_dag_callbacks

    from temporal_airflow.activities.dag_paths import check_dag_path

    callback = DagCallbackInput(**json.load(sys.stdin))
    check_dag_path(callback.dag_path)
    bag = DagBag(dag_folder=callback.dag_path, safe_mode=False)
    request = DagCallbackRequest.model_validate_json(callback.request_json)
    _execute_dag_callbacks(bag, request, structlog.get_logger("temporal_airflow.dag_callback"))


if __name__ == "__main__":
    main()
