"""A small client for Airflow's public REST API (``/api/v2``), for the local stack, its tests and scripts.

It sends no token: it is meant for stacks whose auth manager lets every user in (the local stack sets
``[core] simple_auth_manager_all_admins``). Errors raise :class:`urllib.error.HTTPError`.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


class AirflowRest:
    """Airflow's REST API at ``base`` (for example ``http://127.0.0.1:8080``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/api/v2/{path}`` and return the decoded JSON answer (``None`` when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base}/api/v2/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run now and return its run id."""
        run = self.request("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"dags/{dag_id}/dagRuns/{_quote(run_id)}"))

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"dags/{dag_id}/dagRuns?order_by=-start_date")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.request("GET", f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.request("GET", path)["value"]

    def import_errors(self) -> dict[str, str]:
        """DAG files that did not import: file name -> Airflow's error text."""
        found = self.request("GET", "importErrors?limit=100")["import_errors"]
        return {str(error["filename"]): str(error["stack_trace"]) for error in found}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task try's log as text, one event per line."""
        path = f"dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        content = self.request("GET", path)["content"]
        return "\n".join(str(line.get("event", "")) if isinstance(line, dict) else str(line) for line in content)


def _quote(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")
