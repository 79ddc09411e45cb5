"""Which DAG files an activity worker agrees to import.

A DAG file path arrives in workflow and activity input, and importing a DAG file runs its code. Whoever
can start a workflow on a worker's task queue could otherwise make that worker execute any Python file
it can read. A long-running worker therefore only loads files that, once symlinks and ``..`` are
resolved, lie inside its DAG folders.

``TEMPORAL_AIRFLOW_DAG_FOLDERS``
    the allowed folders, ``os.pathsep``-separated; setting it turns the check on. Default: Airflow's
    ``[core] dags_folder``.
``TEMPORAL_AIRFLOW_CHECK_DAG_FOLDERS``
    ``1`` turns the check on with the default folders (the worker commands set it unless given),
    ``0`` turns it off. Unset: on exactly when ``TEMPORAL_AIRFLOW_DAG_FOLDERS`` is set, so
    ``temporal-airflow run path/to/dag.py`` with in-process workers runs DAG files from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDERS_ENV = "TEMPORAL_AIRFLOW_DAG_FOLDERS"
CHECK_ENV = "TEMPORAL_AIRFLOW_CHECK_DAG_FOLDERS"
#: Error type of a DAG file outside the allowed folders (never retried: the path will not move).
DAG_OUTSIDE_FOLDERS_ERROR = "DagFileOutsideDagFolders"


class DagPathRefused(Exception):
    """The DAG file is outside every allowed DAG folder."""


def check_enabled() -> bool:
    flag = os.environ.get(CHECK_ENV, "").strip()
    if flag:
        return flag.lower() not in ("0", "false", "no", "off")
    return bool(os.environ.get(FOLDERS_ENV, "").strip())


def allowed_folders() -> list[Path]:
    """The allowed DAG folders, symlinks resolved."""
    spec = os.environ.get(FOLDERS_ENV, "").strip()
    if spec:
        folders = [part for part in spec.split(os.pathsep) if part.strip()]
    else:
        from airflow.configuration import conf

        folders = [conf.get("core", "dags_folder")]
    return [Path(folder).expanduser().resolve() for folder in folders]


def check_dag_path(dag_path: str) -> None:
    """Raise :class:`DagPathRefused` when the check is on and ``dag_path`` resolves outside the folders."""
    if not check_enabled():
        return
    folders = allowed_folders()
    resolved = Path(dag_path).expanduser().resolve()
    if any(resolved.is_relative_to(folder) for folder in folders):
        return
    shown = str(resolved) if str(resolved) == dag_path else f"{dag_path} (resolves to {resolved})"
    raise DagPathRefused(
        f"DAG file {shown} is outside the worker's DAG folders ({os.pathsep.join(map(str, folders))}); "
        f"set {FOLDERS_ENV} on the activity worker to allow other folders"
    )
