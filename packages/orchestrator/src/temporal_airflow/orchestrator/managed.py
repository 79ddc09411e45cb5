"""Which DAGs are Temporal-managed: by tag (default ``temporal``) or by ``managed_dags`` globs."""

from __future__ import annotations

import time
from typing import Any

from temporal_airflow.orchestrator.config import TemporalSettings

_TTL_SECONDS = 10.0


class ManagedDags:
    """Answers "is this DAG run Temporal's?"; DAG tags are cached for a few seconds."""

    def __init__(self, settings: TemporalSettings) -> None:
        self.settings = settings
        self._tags: dict[str, tuple[float, set[str]]] = {}

    def __call__(self, dag_run: Any) -> bool:
        from sqlalchemy.orm import object_session

        return self.is_managed(dag_run.dag_id, object_session(dag_run))

    def is_managed(self, dag_id: str, session: Any = None) -> bool:
        return self.settings.manages(dag_id, self._dag_tags(dag_id, session))

    def _dag_tags(self, dag_id: str, session: Any) -> set[str]:
        cached = self._tags.get(dag_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        from airflow.models.dag import DagTag
        from sqlalchemy import select

        query = select(DagTag.name).where(DagTag.dag_id == dag_id)
        if session is not None:
            tags = set(session.scalars(query))
        else:
            from airflow.utils.session import create_session

            with create_session() as own:
                tags = set(own.scalars(query))
        self._tags[dag_id] = (time.monotonic() + _TTL_SECONDS, tags)
        return tags
