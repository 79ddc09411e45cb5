"""The private in-memory SQLite database each DAG run's Airflow rows live in.

Airflow's scheduling code needs its tables; creating the ~60 of them takes a tenth of a second (more
the first time), so they are made once per process, from the installed Airflow's own models (whatever
tables this release has: ``task_map`` up to 3.3, its lengths on XCom from 3.4), and each run's database
starts as a copy of that schema (milliseconds). :func:`open_session` gives a run its database and session,
:func:`create_dag_run` the rows Airflow needs there (the DAG, its version, its bundle) and the DagRun.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pendulum
from airflow.models import import_all_models
from airflow.models.base import Base
from airflow.models.dag import DagModel
from airflow.models.dag_version import DagVersion
from airflow.models.dagbundle import DagBundleModel
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

_BUNDLE = "temporal-airflow"
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


def create_dag_run(
    session: Session,
    dag: Any,
    *,
    run_id: str,
    run_type: str,
    logical_date: datetime | None,
    run_after: datetime,
    conf: dict[str, Any],
    start_date: datetime | None,
) -> DagRun:
    """The DAG's rows (bundle, model, version) and its new running DagRun, through Airflow's own code."""
    session.add(DagBundleModel(name=_BUNDLE))
    # The file's path names it in DAG callback requests.
    fileloc = getattr(dag, "relative_fileloc", None) or getattr(dag, "fileloc", None) or ""
    session.add(DagModel(dag_id=dag.dag_id, bundle_name=_BUNDLE, relative_fileloc=fileloc))
    session.flush()
    DagVersion.write_dag(dag_id=dag.dag_id, bundle_name=_BUNDLE, session=session)
    scheduled = run_type == DagRunType.SCHEDULED
    data_interval = None
    if logical_date is not None:
        data_interval = dag.timetable.infer_manual_data_interval(run_after=pendulum.instance(logical_date))
    run: DagRun = dag.create_dagrun(
        run_id=run_id,
        logical_date=logical_date,
        data_interval=data_interval,
        run_after=run_after,
        conf=conf,
        run_type=DagRunType(run_type),
        triggered_by=DagRunTriggeredByType.TIMETABLE if scheduled else DagRunTriggeredByType.REST_API,
        state=DagRunState.RUNNING,
        start_date=start_date or run_after,
        session=session,
    )
    return run
