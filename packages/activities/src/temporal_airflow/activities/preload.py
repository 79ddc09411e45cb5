"""The task host's warm-up: what every child needs, imported and built once, before any fork.

A child forked from a warm task host starts a try in milliseconds rather than seconds: Airflow's parser
and task runner imported, its plugins and listeners loaded, the ORM's mappers configured and the
in-process Execution API app built, all inherited by every fork (:mod:`temporal_airflow.activities.task_host`).
"""

from __future__ import annotations

import importlib
import os
import warnings

from temporal_airflow.activities.airflow_compat import sdk_http
from temporal_airflow.activities.execution_clients import hostname

#: What every try imports, imported once in the task host: Airflow's parser and task runner, the Task
#: SDK's decorators (and the standard provider's operators they bring), the template environment's
#: extensions, the codec httpx looks host names up with.
_WARM_MODULES = (
    "a2wsgi",
    "airflow.dag_processing.dagbag",
    "anyio._backends._asyncio",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk.definitions.asset.metadata",
    "airflow.sdk.definitions.decorators",
    "airflow.serialization.serialized_objects",
    "encodings.idna",
    "httpx",
    "jinja2.ext",
)


def preload() -> None:
    """Import (and build) what every child needs, once, in the task host, so forks start warm."""
    for module in _WARM_MODULES:
        importlib.import_module(module)
    sdk_http()  # the Task SDK's HTTP library (httpx or httpx2)
    from airflow.sdk.listener import get_listener_manager
    from airflow.sdk.plugins_manager import integrate_macros_plugins

    # Airflow's in-process Execution API sits on Starlette's TestClient, which warns about httpx on
    # every start; the warning is about Airflow's internals, not the user's DAG, so keep logs clean.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    integrate_macros_plugins()  # loads Airflow's plugins (tens of ms a try otherwise)
    get_listener_manager()  # and registers their listeners (a few ms a try otherwise)
    hostname()
    _configure_orm_mappers()
    if os.environ.get("TEMPORAL_AIRFLOW_PRELOAD_EXECUTION_API", "1") == "1":
        _build_execution_api()


def _configure_orm_mappers() -> None:
    """Configure SQLAlchemy's mappers of every Airflow model once, before forking.

    SQLAlchemy configures mappers lazily, at a process's first query; Airflow's ~60 models take
    ~0.6 s of CPU to configure (event listeners on every relationship), which a deep-mode try would
    otherwise pay before its first DB read.
    """
    from airflow.models import import_all_models
    from sqlalchemy.orm import configure_mappers

    import_all_models()
    configure_mappers()


def _build_execution_api() -> None:
    """Build Airflow's in-process Execution API app (seconds of route generation) before forking.

    Only the app is built here; its transport (which starts a thread) is created in each child.
    """
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app
    initialize = getattr(app, "_cadwyn_initialize", None)
    if callable(initialize) and not getattr(app, "_cadwyn_initialized", True):
        initialize()
