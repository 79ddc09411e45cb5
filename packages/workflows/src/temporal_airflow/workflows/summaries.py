"""The task summaries a run carries into its next execution, as one JSON text.

Temporal's JSON converter turns a list of dataclasses into objects field by field, about 0.2 ms per
``TaskSummary`` (more on a busy machine): the 10,000 summaries of a big fan-out took seconds inside the
next execution's first activation, past Temporal's 2 s deadlock detector. A :class:`RunSnapshot` carries
them as one string instead (``tasks_json``), written and read here with the standard ``json`` module and
plain constructors: tens of milliseconds for 10,000.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from temporalio.converter import AdvancedJSONEncoder, value_to_type

from temporal_airflow.models import Deferral, Reschedule, RunSnapshot, TaskSummary, XComEntry


def dump(tasks: Iterable[TaskSummary]) -> str:
    """``tasks`` as JSON: each summary's fields (dates as ISO text, nested dataclasses as objects)."""
    return json.dumps([vars(task) for task in tasks], cls=AdvancedJSONEncoder, separators=(",", ":"))


def load(text: str) -> list[TaskSummary]:
    """The summaries :func:`dump` wrote."""
    return [_summary(row) for row in json.loads(text)]


def snapshot_tasks(snapshot: RunSnapshot) -> list[TaskSummary]:
    """A snapshot's summaries, whichever way it carries them (``tasks`` in histories from before)."""
    return load(snapshot.tasks_json) if snapshot.tasks_json else snapshot.tasks


def _summary(row: dict[str, Any]) -> TaskSummary:
    row["start_date"] = _date(row.get("start_date"))
    row["end_date"] = _date(row.get("end_date"))
    row["xcoms"] = [XComEntry(**entry) for entry in row.get("xcoms") or []]
    if row.get("reschedule") is not None:
        row["reschedule"] = value_to_type(Reschedule, row["reschedule"])
    if row.get("deferral") is not None:
        row["deferral"] = value_to_type(Deferral, row["deferral"])
    return TaskSummary(**row)


def _date(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
