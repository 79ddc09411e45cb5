"""Make Airflow's notion of "now" come from ``workflow.now()`` inside workflows.

Stock Airflow has no pluggable time provider. Every "now" in its scheduling code goes through
``utcnow`` of Airflow's (and its Task SDK's) shared timezone module: module attribute calls *and*
function objects bound early, such as SQLAlchemy column defaults. We swap that one function's code
object, so every reference sees the change, for code that asks "am I inside a Temporal workflow?" on
each call:

* inside a workflow activation (any thread, any number of concurrent workflows) it returns
  ``workflow.now()``, the deterministic time of the current workflow task;
* everywhere else (activities, the CLI, Airflow itself) it returns the wall clock as before.

Which modules, and whether this Airflow's ``utcnow`` has the shape the swap needs, is decided by
:mod:`temporal_airflow.workflows.airflow_compat` (the package's one door to Airflow's internals), which
calls :func:`install`; this module only does the swap.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterable

from temporalio import workflow

_PROVIDER_NAME = "_temporal_airflow_now"


def _now() -> dt.datetime:
    """Workflow time inside a workflow, wall-clock time elsewhere (UTC-aware, as Airflow returns)."""
    from airflow._shared.timezones.timezone import utc

    if workflow.in_workflow():
        return workflow.now().astimezone(utc)
    return dt.datetime.now(tz=utc)


def _template() -> dt.datetime:  # pragma: no cover - only its code object is used
    return _temporal_airflow_now()  # type: ignore[name-defined]  # noqa: F821


def install(modules: Iterable[str]) -> None:
    """Route each module's ``utcnow`` through :func:`_now` (its shape checked by the door); idempotent."""
    for name in modules:
        module = importlib.import_module(name)
        module.__dict__[_PROVIDER_NAME] = _now
        module.utcnow.__code__ = _template.__code__
