"""DAGs for the deferral tests: reschedule-mode sensors, time triggers, a custom trigger, trigger timeouts."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator, dag, task
from airflow.triggers.base import BaseTrigger, TriggerEvent

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _count_poke(**context: Any) -> bool:
    """One line per poke in the counter file named in the conf; true from the conf's ``pokes``-th poke."""
    conf = context["dag_run"].conf
    with open(conf["counter"], "a") as fh:
        fh.write(f"{context['ti'].task_id}\n")
    with open(conf["counter"]) as fh:
        pokes = sum(1 for line in fh if line.strip() == context["ti"].task_id)
    return pokes >= conf.get("pokes", 10**9)


@dag(schedule=None, start_date=START)
def reschedule_sensor():
    """A reschedule-mode sensor that succeeds on its third poke, two seconds apart."""
    PythonSensor(task_id="wait", python_callable=_count_poke, mode="reschedule", poke_interval=2, timeout=120)


reschedule_sensor()


@dag(schedule=None, start_date=START)
def sensor_timeouts():
    """Reschedule-mode sensors that never succeed: one fails at its timeout, one is skipped (soft_fail)."""
    for task_id, soft_fail in (("times_out", False), ("soft_fails", True)):
        PythonSensor(
            task_id=task_id,
            python_callable=_count_poke,
            mode="reschedule",
            poke_interval=1,
            timeout=4,
            soft_fail=soft_fail,
            retries=2,
        )


sensor_timeouts()


@dag(schedule=None, start_date=START)
def time_deferral():
    """A deferrable TimeDeltaSensor: waits on a workflow timer, then the task resumes and completes."""

    @task
    def after() -> str:
        return "done"

    TimeDeltaSensor(task_id="sleep", delta=timedelta(seconds=6), deferrable=True) >> after()


time_deferral()


class FileTrigger(BaseTrigger):
    """Polls for a file; its event carries the file's content."""

    def __init__(self, path: str, poll_seconds: float = 0.3) -> None:
        super().__init__()
        self.path = path
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"path": self.path}

    async def run(self):
        while not os.path.exists(self.path):
            await asyncio.sleep(self.poll_seconds)
        with open(self.path) as fh:
            yield TriggerEvent({"content": fh.read(), "path": self.path})


class WaitForFile(BaseOperator):
    """Defers to :class:`FileTrigger`; resumes with the event and returns the file's content."""

    template_fields = ("path",)

    def __init__(self, path: str, trigger_timeout: timedelta | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.trigger_timeout = trigger_timeout

    def execute(self, context: Any) -> None:
        self.defer(
            trigger=FileTrigger(self.path),
            method_name="resume",
            kwargs={"asked_at_try": context["ti"].try_number},
            timeout=self.trigger_timeout,
        )

    def resume(self, context: Any, event: dict[str, Any], asked_at_try: int) -> dict[str, Any]:
        return {"content": event["content"], "asked_at_try": asked_at_try}


@dag(schedule=None, start_date=START, params={"path": ""})
def custom_trigger():
    """A task that waits for a file through a custom trigger, run on the activity worker."""
    WaitForFile(task_id="wait_for_file", path="{{ params.path }}")


custom_trigger()


class NeverBefore(BaseOperator):
    """Defers to a moment an hour away, with a trigger timeout of two seconds."""

    def execute(self, context: Any) -> None:
        moment = pendulum.now("UTC").add(hours=1)
        self.defer(trigger=DateTimeTrigger(moment), method_name="execute", timeout=timedelta(seconds=2))


@dag(schedule=None, start_date=START, params={"path": ""})
def trigger_timeouts():
    """Trigger timeouts: on a time trigger (a timer) and on a custom trigger (an activity)."""
    NeverBefore(task_id="timer_times_out")
    WaitForFile(task_id="trigger_times_out", path="{{ params.path }}", trigger_timeout=timedelta(seconds=2))


trigger_timeouts()


@dag(schedule=None, start_date=START)
def long_wait():
    """A sensor poking many times next to a deferred task: the run continues as new while both wait."""
    PythonSensor(task_id="poker", python_callable=_count_poke, mode="reschedule", poke_interval=1, timeout=600)
    TimeDeltaSensor(task_id="sleeper", delta=timedelta(seconds=10), deferrable=True)


long_wait()
