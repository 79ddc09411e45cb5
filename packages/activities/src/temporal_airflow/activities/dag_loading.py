"""DAG files parsed for a child of the task host: a try, a trigger or a DAG-file parse.

Every child loads its DAG here, with Airflow's ``DagBag``: only files inside the worker's DAG folders
(:mod:`temporal_airflow.activities.dag_paths`), an import error or an unknown DAG id as a
:class:`ChildError` naming the file. A zygote of the task host parses a file once with
:func:`parse_ahead` before forking, so the children forked from it find their DAG already parsed, each a
pristine copy of its own.
"""

from __future__ import annotations

import os
from typing import Any

from temporal_airflow.activities.dag_paths import DAG_OUTSIDE_FOLDERS_ERROR, DagPathRefused, check_dag_path
from temporal_airflow.models import DAG_IMPORT_ERROR, DAG_NOT_FOUND_ERROR, LoadDagFileInput


class ChildError(Exception):
    """An error that retrying cannot fix (bad DAG file, unknown DAG); ``kind`` is its error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


#: The DAGs of the file this process parsed ahead of the children forked from it: (path, DAG id) -> DAG
#: (and (path, ``None``) -> DAG when the file defines one DAG).
_parsed: dict[tuple[str, str | None], Any] = {}


def load_dag(dag_path: str, dag_id: str | None) -> Any:
    """Parse a DAG file with Airflow's DagBag; import errors name the file and the error.

    Only files inside the worker's DAG folders are imported (:mod:`temporal_airflow.activities.dag_paths`).
    A DAG :func:`parse_ahead` parsed before this process was forked is not parsed again.
    """
    _check_path(dag_path)
    if (parsed := _parsed.get((dag_path, dag_id))) is not None:
        return parsed
    dags = _parse(dag_path)
    if dag_id is None:
        if len(dags) != 1:
            found = ", ".join(sorted(dags)) or "none"
            raise ChildError(DAG_NOT_FOUND_ERROR, f"{dag_path} defines {len(dags)} DAGs ({found}); pass --dag-id")
        return next(iter(dags.values()))
    if dag_id not in dags:
        found = ", ".join(sorted(dags)) or "none"
        raise ChildError(DAG_NOT_FOUND_ERROR, f"DAG {dag_id!r} not found in {dag_path} (found: {found})")
    return dags[dag_id]


def _check_path(dag_path: str) -> None:
    try:
        check_dag_path(dag_path)
    except DagPathRefused as err:
        raise ChildError(DAG_OUTSIDE_FOLDERS_ERROR, str(err)) from None


def _parse(dag_path: str) -> dict[str, Any]:
    """Every DAG of the file, by id."""
    from airflow.dag_processing.dagbag import DagBag

    if not os.path.exists(dag_path):
        raise ChildError(DAG_IMPORT_ERROR, f"DAG file not found: {dag_path}")
    bag = DagBag(dag_folder=dag_path, safe_mode=False)
    if bag.import_errors:
        errors = "; ".join(f"{path}: {err.strip()}" for path, err in bag.import_errors.items())
        raise ChildError(DAG_IMPORT_ERROR, f"DAG file {dag_path} failed to import: {errors}")
    return dict(bag.dags)


def parse_ahead(dag_path: str) -> None:
    """Parse a DAG file for the children this process will fork. A file that fails to parse is left for
    each child to parse again and report, as without this."""
    try:
        _check_path(dag_path)
        dags = _parse(dag_path)
    except Exception:  # the children report it
        return
    for dag_id, dag in dags.items():
        _parsed[(dag_path, dag_id)] = dag
    if len(dags) == 1:
        _parsed[(dag_path, None)] = next(iter(dags.values()))


def serialize_dag_file(task: LoadDagFileInput) -> dict[str, Any]:
    """Child entry point: the DAG in Airflow's serialized form."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_dag(task.dag_path, task.dag_id)
    dag.validate()
    return {
        "dag_id": dag.dag_id,
        "fileloc": os.path.abspath(dag.fileloc),
        "serialized_dag": DagSerialization.to_dict(dag),
    }
