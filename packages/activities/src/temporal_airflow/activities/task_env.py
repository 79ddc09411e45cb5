"""The environment task code runs with: the worker's, without the worker's Temporal and encryption secrets.

Task tries, triggers, DAG-file parses (the task host and every child it forks) and DAG callbacks run DAG
authors' code. They never talk to Temporal nor encrypt anything (the worker does, in its own process,
with what it read at start), so the variables that would let that code act as the worker towards
Temporal or read every history of the namespace are removed before they start:

- every Temporal client setting (``TEMPORAL_*`` other than ``TEMPORAL_AIRFLOW_*``: ``TEMPORAL_API_KEY``,
  ``TEMPORAL_TLS_*``, ``TEMPORAL_GRPC_META_*``, ``TEMPORAL_CODEC_AUTH``, ``TEMPORAL_PROFILE``, ...);
- the encryption key (``TEMPORAL_AIRFLOW_ENCRYPTION_KEY`` / ``_FILE``) and the codec server's token
  (``TEMPORAL_AIRFLOW_CODEC_TOKEN`` / ``_FILE``), and any ``TEMPORAL_AIRFLOW_*`` whose name says it is a
  key, token, secret or password;
- the names in ``TEMPORAL_AIRFLOW_TASK_ENV_EXCLUDE`` (comma-separated; ``PREFIX*`` for a prefix): the
  deployment's own secrets that tasks must not see.

What task code still sees, on purpose: Airflow's configuration and its connections and variables from the
environment (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``: tasks read them under Airflow too), and in deep mode
what Airflow's Execution API needs, because it runs inside the try's process on the metadata DB: the DB
URL (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) and the Fernet key. Task code also runs as the worker's
user: a key file that user can read stays readable (give the workers the key in their environment, or
run tasks as another user, for DAG authors you do not trust with it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

EXCLUDE_ENV = "TEMPORAL_AIRFLOW_TASK_ENV_EXCLUDE"
#: Secrets of temporal-airflow itself, whatever their name.
_OWN_SECRETS = frozenset(
    {
        "TEMPORAL_AIRFLOW_ENCRYPTION_KEY",
        "TEMPORAL_AIRFLOW_ENCRYPTION_KEY_FILE",
        "TEMPORAL_AIRFLOW_CODEC_TOKEN",
        "TEMPORAL_AIRFLOW_CODEC_TOKEN_FILE",
    }
)
_SECRET_WORDS = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def is_worker_secret(name: str, extra: tuple[str, ...] = ()) -> bool:
    """Whether the variable ``name`` stays with the worker (see the module docstring)."""
    upper = name.upper()
    if upper in _OWN_SECRETS:
        return True
    if upper.startswith("TEMPORAL_") and not upper.startswith("TEMPORAL_AIRFLOW_"):
        return True
    if upper.startswith("TEMPORAL_AIRFLOW_") and _SECRET_WORDS.search(upper.removeprefix("TEMPORAL_AIRFLOW_")):
        return True
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in extra)


def task_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without the worker's secrets, for processes running task code."""
    environ = os.environ if environ is None else environ
    extra = tuple(part.strip() for part in environ.get(EXCLUDE_ENV, "").split(",") if part.strip())
    return {name: value for name, value in environ.items() if not is_worker_secret(name, extra)}
