"""Settings from Airflow's ``[temporal]`` config section, each overridable by a ``TEMPORAL_*`` env var.

=====================  =================================  =====================================
``[temporal]`` key     environment variable               meaning
=====================  =================================  =====================================
address                TEMPORAL_ADDRESS                   frontend ``host:port``
namespace              TEMPORAL_NAMESPACE                 namespace (default ``default``)
api_key                TEMPORAL_API_KEY                   Temporal Cloud API key (implies TLS)
tls_cert_path          TEMPORAL_TLS_CLIENT_CERT_PATH      mTLS client certificate
tls_key_path           TEMPORAL_TLS_CLIENT_KEY_PATH       mTLS client key
tls_ca_path            TEMPORAL_TLS_SERVER_CA_CERT_PATH   CA of the server (optional)
workflow_task_queue    TEMPORAL_WORKFLOW_TASK_QUEUE       queue of the workflow workers
activity_task_queue    TEMPORAL_ACTIVITY_TASK_QUEUE       queue of the activity workers
managed_dags           TEMPORAL_MANAGED_DAGS              comma-separated dag_id globs, ``*`` = all
managed_tag            TEMPORAL_MANAGED_TAG               DAGs with this tag are managed (``temporal``)
reconcile_interval     TEMPORAL_RECONCILE_INTERVAL        seconds between reconciliations (5)
action_interval        TEMPORAL_ACTION_INTERVAL           seconds between looks, between two
                                                          reconciliations, for what users did to
                                                          running runs: marks, clears (0.5; 0:
                                                          at reconciliations only)
prompt_start_interval  TEMPORAL_PROMPT_START_INTERVAL     seconds between looks for new queued runs of
                                                          managed DAGs, which wake the scheduler's
                                                          idle loop (0.1; 0 turns it off)
task_heartbeat_timeout TEMPORAL_TASK_HEARTBEAT_TIMEOUT    seconds without a heartbeat before a task
                                                          try resumes on another worker (60)
=====================  =================================  =====================================
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporal_airflow.models import DEFAULT_ACTIVITY_TASK_QUEUE, DEFAULT_WORKFLOW_TASK_QUEUE

_ENV = {
    "address": "TEMPORAL_ADDRESS",
    "namespace": "TEMPORAL_NAMESPACE",
    "api_key": "TEMPORAL_API_KEY",
    "tls_cert_path": "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "tls_key_path": "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "tls_ca_path": "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "workflow_task_queue": "TEMPORAL_WORKFLOW_TASK_QUEUE",
    "activity_task_queue": "TEMPORAL_ACTIVITY_TASK_QUEUE",
    "managed_dags": "TEMPORAL_MANAGED_DAGS",
    "managed_tag": "TEMPORAL_MANAGED_TAG",
    "reconcile_interval": "TEMPORAL_RECONCILE_INTERVAL",
    "action_interval": "TEMPORAL_ACTION_INTERVAL",
    "prompt_start_interval": "TEMPORAL_PROMPT_START_INTERVAL",
    "task_heartbeat_timeout": "TEMPORAL_TASK_HEARTBEAT_TIMEOUT",
    "ui_url": "TEMPORAL_UI_URL",
}


def _read(key: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The ``TEMPORAL_*`` variable, else Airflow's ``[temporal]`` key: from Airflow's config, or from
    ``environ``'s ``AIRFLOW__TEMPORAL__*`` when settings are read from a given environment."""
    value = (os.environ if environ is None else environ).get(_ENV[key])
    if value is not None:
        return value
    if environ is not None:
        return environ.get(f"AIRFLOW__TEMPORAL__{key.upper()}", default)
    from airflow.configuration import conf

    return str(conf.get("temporal", key, fallback=default) or default)


@dataclass(frozen=True)
class TemporalSettings:
    """Where and how the plugin reaches Temporal, and which DAGs it manages."""

    address: str = "localhost:7233"
    namespace: str = "default"
    api_key: str = ""
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_ca_path: str = ""
    workflow_task_queue: str = DEFAULT_WORKFLOW_TASK_QUEUE
    activity_task_queue: str = DEFAULT_ACTIVITY_TASK_QUEUE
    managed_dags: tuple[str, ...] = ()
    managed_tag: str = "temporal"
    reconcile_interval: float = 5.0
    #: Seconds between looks for users' actions on running runs (task marks, clears, a run marked
    #: success/failed or deleted) between two reconciliations; 0: at reconciliations only.
    action_interval: float = 0.5
    #: Seconds between looks for new queued runs of managed DAGs (:mod:`.prompt_start`); 0: never look.
    prompt_start_interval: float = 0.1
    ui_url: str = ""
    #: A task try's worker is presumed dead after this long without a heartbeat; the try then resumes
    #: on another worker (same Airflow try number).
    task_heartbeat_timeout: float = 60.0

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> TemporalSettings:
        """The plugin's settings (from ``environ`` alone when given, e.g. a stack's environment)."""

        def _setting(key: str, default: str = "") -> str:
            return _read(key, default, environ)

        globs = tuple(g.strip() for g in _setting("managed_dags").split(",") if g.strip())
        return cls(
            address=_setting("address", "localhost:7233"),
            namespace=_setting("namespace", "default"),
            api_key=_setting("api_key"),
            tls_cert_path=_setting("tls_cert_path"),
            tls_key_path=_setting("tls_key_path"),
            tls_ca_path=_setting("tls_ca_path"),
            workflow_task_queue=_setting("workflow_task_queue", DEFAULT_WORKFLOW_TASK_QUEUE),
            activity_task_queue=_setting("activity_task_queue", DEFAULT_ACTIVITY_TASK_QUEUE),
            managed_dags=globs,
            managed_tag=_setting("managed_tag", "temporal"),
            reconcile_interval=float(_setting("reconcile_interval", "5")),
            action_interval=float(_setting("action_interval", "0.5")),
            prompt_start_interval=float(_setting("prompt_start_interval", "0.1")),
            ui_url=_setting("ui_url").rstrip("/"),
            task_heartbeat_timeout=float(_setting("task_heartbeat_timeout", "60")),
        )

    def manages(self, dag_id: str, tags: set[str]) -> bool:
        """A DAG is Temporal-managed if it carries the managed tag or matches a configured glob."""
        if self.managed_tag and self.managed_tag in tags:
            return True
        return any(fnmatch.fnmatchcase(dag_id, glob) for glob in self.managed_dags)

    def describe_managed(self) -> str:
        """Which DAGs run on Temporal, in words (``temporal-airflow up``'s banner says it)."""
        if "*" in self.managed_dags:
            return "every DAG (TEMPORAL_MANAGED_DAGS=*)"
        rules = [f"DAGs tagged '{self.managed_tag}'"] if self.managed_tag else []
        if self.managed_dags:
            rules.append(f"dag_ids matching {', '.join(self.managed_dags)}")
        return " and ".join(rules) or "no DAG (no TEMPORAL_MANAGED_TAG, no TEMPORAL_MANAGED_DAGS)"

    def workflow_ui_link(self, workflow_id: str) -> str | None:
        """The workflow's page in the Temporal UI, when ``ui_url`` is configured."""
        if not self.ui_url:
            return None
        return f"{self.ui_url}/namespaces/{quote(self.namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``temporalio.client.Client.connect`` (API key and/or mTLS)."""
        from temporalio.service import TLSConfig

        kwargs: dict[str, Any] = {"target_host": self.address, "namespace": self.namespace}
        tls: TLSConfig | bool = False
        if self.tls_cert_path or self.tls_key_path:
            if not (self.tls_cert_path and self.tls_key_path):
                raise ValueError("[temporal] tls_cert_path and tls_key_path must be set together")
            tls = TLSConfig(
                client_cert=Path(self.tls_cert_path).read_bytes(),
                client_private_key=Path(self.tls_key_path).read_bytes(),
                server_root_ca_cert=Path(self.tls_ca_path).read_bytes() if self.tls_ca_path else None,
            )
        if self.api_key:
            kwargs["api_key"] = self.api_key
            tls = tls or True
        if tls:
            kwargs["tls"] = tls
        return kwargs
