"""Which trigger classes a worker agrees to build.

A deferral's trigger classpath arrives in activity input (``run_airflow_trigger``), and building a trigger
calls whatever that path names with the kwargs next to it. Whoever can start a workflow or an activity in
the namespace could otherwise make a worker call any callable it can import (``subprocess.getoutput``).
So a trigger is built only when both hold:

- its module is allowed: its name starts with one of the allowed prefixes (default ``airflow.``: Airflow's
  own triggers and those of every installed provider, which live under ``airflow.providers``), or it is a
  module the task's DAG file imported (a trigger class defined in the DAG file, or in a module next to it)
  whose file lies inside the worker's DAG folders (:mod:`temporal_airflow.activities.dag_paths`; with the
  DAG-folder check off, inside the folder of the task's DAG file). A module outside the prefixes is never
  imported here: only one already loaded by the DAG file counts.
- the name is a class, subclass of Airflow's ``BaseTrigger``.

``TEMPORAL_AIRFLOW_TRIGGER_MODULES``
    more allowed module prefixes, comma-separated (``mycompany.triggers.``; a prefix names a package
    when it ends with a dot, else an exact module or a package and its submodules).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from temporal_airflow.activities.dag_paths import allowed_folders, check_enabled

MODULES_ENV = "TEMPORAL_AIRFLOW_TRIGGER_MODULES"
#: Module prefixes always allowed: Airflow's and its providers' trigger modules.
DEFAULT_PREFIXES = ("airflow.",)
#: How a refused trigger is named in its error message.
TRIGGER_REFUSED = "TriggerRefused"


class TriggerRefused(Exception):
    """The classpath names no allowed trigger class."""


def allowed_prefixes() -> tuple[str, ...]:
    extra = (part.strip() for part in os.environ.get(MODULES_ENV, "").split(","))
    return DEFAULT_PREFIXES + tuple(part for part in extra if part)


def _prefix_allows(module: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return module.startswith(prefix)
    return module == prefix or module.startswith(prefix + ".")


def _dag_roots(dag_path: str | None) -> list[Path]:
    if check_enabled():
        return allowed_folders()
    return [Path(dag_path).expanduser().resolve().parent] if dag_path else []


def _loaded_from_dag_folders(module: str, dag_path: str | None) -> bool:
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if not file:
        return False
    resolved = Path(file).resolve()
    return any(resolved.is_relative_to(root) for root in _dag_roots(dag_path))


def trigger_class(classpath: str, dag_path: str | None) -> type[Any]:
    """The trigger class ``classpath`` names; :class:`TriggerRefused` unless it is an allowed trigger."""
    from airflow.triggers.base import BaseTrigger

    module, _, name = classpath.rpartition(".")
    refused = f"{TRIGGER_REFUSED}: {classpath!r} is not a trigger this worker builds"
    if not module or not name:
        raise TriggerRefused(f"{refused} (not a module.Class path)")
    if any(_prefix_allows(module, prefix) for prefix in allowed_prefixes()):
        import importlib

        try:
            loaded = importlib.import_module(module)
        except ImportError as err:
            raise TriggerRefused(f"{refused}: {err}") from None
    elif _loaded_from_dag_folders(module, dag_path):
        loaded = sys.modules[module]
    else:
        raise TriggerRefused(
            f"{refused}: module {module!r} is neither under an allowed prefix "
            f"({', '.join(allowed_prefixes())}; add more with {MODULES_ENV}) nor a module of the DAG folders "
            "imported by the task's DAG file"
        )
    cls = getattr(loaded, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseTrigger)):
        raise TriggerRefused(f"{refused}: {name!r} is not a subclass of airflow.triggers.base.BaseTrigger")
    return cls
