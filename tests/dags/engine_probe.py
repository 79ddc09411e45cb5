"""DAGs for the engine tests: counted task bodies, dying task processes, retry policies, big XComs."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

try:  # a task's retry_policy is new in Airflow 3.3: on 3.2 this file has no retry_policy_probe
    from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule
except ImportError:
    ExceptionRetryPolicy = None  # type: ignore[assignment,misc]

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _count(context: dict, name: str) -> int:
    """Append one line per body run to the counter file named in the run's conf; returns runs so far."""
    path = context["dag_run"].conf["counter"]
    with open(path, "a") as fh:
        fh.write(f"{name}\n")
    with open(path) as fh:
        return sum(1 for line in fh if line.strip() == name)


@dag(schedule=None, start_date=START)
def process_dies():
    """A task whose process exits without an outcome on every try (``retries`` from the conf)."""

    @task(retries=0)
    def dies_no_retry(**context) -> None:
        _count(context, "dies_no_retry")
        os._exit(1)

    @task(retries=2, retry_delay=timedelta(seconds=1))
    def dies_with_retries(**context) -> None:
        _count(context, "dies_with_retries")
        os._exit(1)

    dies_no_retry()
    dies_with_retries()


process_dies()


def retry_policy_probe():
    """A retry policy asks for a 3 s delay on ConnectionError; the task succeeds on try 2."""

    @task(
        retries=3,
        retry_delay=timedelta(minutes=10),
        retry_policy=ExceptionRetryPolicy(
            rules=[RetryRule(exception=ConnectionError, action=RetryAction.RETRY, retry_delay=timedelta(seconds=3))]
        ),
    )
    def flaky(**context) -> int:
        if _count(context, "flaky") < 2:
            raise ConnectionError("service unavailable")
        return context["ti"].try_number

    flaky()


if ExceptionRetryPolicy is not None:
    dag(schedule=None, start_date=START)(retry_policy_probe)()


@dag(schedule=None, start_date=START)
def big_xcoms():
    """Five 450 KB XComs fan into one task; one task pushes 3 MB."""

    @task
    def part(i: int) -> str:
        return str(i) * (450 * 1024)

    @task
    def combine(parts: list[str]) -> int:
        return sum(len(p) for p in parts)

    @task
    def huge() -> str:
        return "y" * (3 * 1024 * 1024)

    combine([part.override(task_id=f"part_{i}")(i) for i in range(5)])
    huge()


big_xcoms()


@dag(schedule=None, start_date=START, max_active_tasks=4)
def long_chain():
    """A chain of counted tasks (length from ``CHAIN_LENGTH``, default 40) and a small mapped fan-out."""

    @task
    def step(previous: int | None = None, **context) -> int:
        _count(context, context["ti"].task_id)
        return (previous or 0) + 1

    value = step.override(task_id="step_000")()
    for i in range(1, int(os.environ.get("CHAIN_LENGTH", "40"))):
        value = step.override(task_id=f"step_{i:03d}")(value)

    @task
    def fan(x: int) -> int:
        return x * 2

    @task
    def total(values: list[int], last: int) -> int:
        return sum(values) + last

    total(fan.expand(x=[1, 2, 3, 4, 5, 6]), value)


long_chain()


@dag(schedule=None, start_date=START)
def second_order_mapping():
    """A task mapped over the outputs of a mapped task (lengths known only at runtime)."""

    @task
    def numbers() -> list[int]:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return x * 2

    @task
    def plus_one(x: int) -> int:
        return x + 1

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(plus_one.expand(x=double.expand(x=numbers())))


second_order_mapping()


@dag(schedule=None, start_date=START, max_active_tasks=16)
def wide_fanout():
    """A fan-out wider than one activation's worth of rows, counted per index."""

    @task
    def indexes() -> list[int]:
        return list(range(400))

    @task
    def work(i: int, **context) -> int:
        _count(context, f"work_{i}")
        return i

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(work.expand(i=indexes()))


wide_fanout()


@dag(schedule=None, start_date=START)
def too_wide_fanout():
    """A fan-out over more values than Airflow's ``[core] max_map_length`` (1,024 by default) allows."""

    @task
    def indexes() -> list[int]:
        return list(range(1025))

    @task
    def work(i: int) -> int:
        return i

    work.expand(i=indexes())


too_wide_fanout()
