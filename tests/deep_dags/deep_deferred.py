"""A deferrable sensor whose trigger waits long enough for a test to watch Airflow show it `deferred`."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import dag

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(schedule=None, start_date=START, catchup=False)
def deep_deferred():
    TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=12), deferrable=True)


deep_deferred()
