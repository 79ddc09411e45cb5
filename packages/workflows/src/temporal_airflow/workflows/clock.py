"""Make Airflow's notion of "now" come from ``workflow.now()`` inside workflows.

Stock Airflow has no pluggable time provider. Every "now" in its scheduling code goes through
``airflow._shared.timezones.timezone.utcnow`` (module attribute calls *and* function objects bound
early, such as SQLAlchemy column defaults). We swap that one function's code object, so every
reference sees the change, for code that asks "am I inside a Temporal workflow?" on each call:

* inside a workflow activation (any thread, any number of concurrent workflows) it returns
  ``workflow.now()``, the deterministic time of the current workflow task;
* everywhere else (activities, the CLI, Airflow itself) it returns the wall clock as before.

The seam is guarded: it checks the installed Airflow version and the function's shape and refuses to
install on anything it has not been checked against.
"""

from __future__ import annotations

import datetime as dt
import types

import airflow
from temporalio import workflow

_SUPPORTED_AIRFLOW = ("3.3.",)
_PROVIDER_NAME = "_temporal_airflow_now"


class UnsupportedAirflowError(RuntimeError):
    """The installed Airflow does not offer the seam this module relies on."""


def _now() -> dt.datetime:
    """Workflow time inside a workflow, wall-clock time elsewhere (UTC-aware, as Airflow returns)."""
    from airflow._shared.timezones.timezone import utc

    if workflow.in_workflow():
        return workflow.now().astimezone(utc)
    return dt.datetime.now(tz=utc)


def _template() -> dt.datetime:  # pragma: no cover - only its code object is used
    return _temporal_airflow_now()  # type: ignore[name-defined]  # noqa: F821


def install() -> None:
    """Route Airflow's ``utcnow`` through :func:`_now`; idempotent."""
    if not airflow.__version__.startswith(_SUPPORTED_AIRFLOW):
        raise UnsupportedAirflowError(
            f"temporal-airflow supports Airflow {_SUPPORTED_AIRFLOW}; found {airflow.__version__}"
        )
    from airflow._shared.timezones import timezone as core_tz
    from airflow.sdk._shared.timezones import timezone as sdk_tz

    for module in (core_tz, sdk_tz):
        func = module.utcnow
        if not isinstance(func, types.FunctionType) or func.__code__.co_freevars:
            raise UnsupportedAirflowError(f"{module.__name__}.utcnow has an unexpected shape")
        module.__dict__[_PROVIDER_NAME] = _now
        func.__code__ = _template.__code__
