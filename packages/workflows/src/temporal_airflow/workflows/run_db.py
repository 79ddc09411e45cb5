"""The private in-memory SQLite database each DAG run's Airflow rows live in.

Airflow's scheduling code needs its tables; creating the ~60 of them takes a tenth of a second (more
the first time), so they are made once per process, from the installed Airflow's own models (whatever
tables this release has: ``task_map`` up to 3.3, its lengths on XCom from 3.4), and each run's database
starts as a copy of that schema (milliseconds). :func:`open_session` gives a run its database and session.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.models import import_all_models
from airflow.models.base import Base
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

_LOCK = threading.Lock()
_schema: Engine | None = None


def _new_engine() -> Engine:
    return create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})


def _copy_schema(engine: Engine) -> None:
    global _schema
    with _LOCK:
        if _schema is None:
            import_all_models()
            _schema = _new_engine()
            Base.metadata.create_all(_schema)
        source: Any = _schema.raw_connection().driver_connection
        source.backup(engine.raw_connection().driver_connection)


class RunSession(Session):
    """The in-workflow DB's session: adding a brand-new task instance needs no lookup.

    Airflow's mapped-task expansion ``merge``s each new ``TaskInstance`` (a SELECT by its fresh
    UUID per index: seconds for thousands of indexes); for a transient one that is the same as ``add``.
    """

    def merge(self, instance: Any, *, load: bool = True, options: Any = None) -> Any:
        if load and isinstance(instance, TaskInstance) and inspect(instance).transient:
            self.add(instance)
            return instance
        return super().merge(instance, load=load, options=options)


def open_session() -> tuple[Engine, Session]:
    """A fresh database holding Airflow's (empty) tables, and the run's session on it."""
    engine = _new_engine()
    _copy_schema(engine)
    return engine, sessionmaker(bind=engine, class_=RunSession, expire_on_commit=False)()
