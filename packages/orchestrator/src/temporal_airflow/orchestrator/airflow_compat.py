"""Every version-dependent touch of Airflow by the orchestrator plugin, behind one door.

The plugin changes Airflow's scheduler (:mod:`temporal_airflow.orchestrator.seam`) by wrapping five of
its private methods; a scheduler whose methods the wraps do not fit would run managed runs' tasks a
second time. So before anything is wrapped, :func:`check` refuses (one line, :class:`SeamUnavailable`):

* an Airflow outside the supported range (:mod:`temporal_airflow.models.airflow_support`: 3.2 to 3.4,
  declared once for every package): the version is the guard;
* a wrapped method that is missing or whose leading parameters differ from :data:`SEAM_SIGNATURES`: the
  feature check. Parameters after those are passed through untouched (3.4's scheduler adds
  ``eagerly_load_dag_tags`` to ``DagRun.get_running_dag_runs_to_examine``).

:data:`TOUCHED` lists every Airflow attribute the plugin reaches past Airflow's public API for, so a test
can check each on the installed Airflow.
"""

from __future__ import annotations

import inspect

from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, check_airflow_version

COMPONENT = "temporal-airflow orchestrator"
#: The wrapped methods and the leading parameters each wrap relies on.
SEAM_SIGNATURES: dict[str, list[str]] = {
    "SchedulerJobRunner._execute": ["self"],
    "SchedulerJobRunner._schedule_dag_run": ["self", "dag_run", "session"],
    "SchedulerJobRunner._update_dag_run_state_for_paused_dags": ["self", "session"],
    "DagRun.get_running_dag_runs_to_examine": ["session"],
    "DagRun.update_state": ["self", "session", "execute_callbacks"],
}
#: Every Airflow attribute the plugin touches beyond Airflow's public API (module -> attributes).
TOUCHED: dict[str, tuple[str, ...]] = {
    "airflow.jobs.scheduler_job_runner": ("SchedulerJobRunner", "time"),
    "airflow.models.dagrun": ("DagRun",),
}


class SeamUnavailable(RuntimeError):
    """The installed Airflow does not offer the scheduler seam this plugin needs (one line, naming the plugin)."""


def check() -> tuple[int, int]:
    """The installed Airflow's release line; :class:`SeamUnavailable` unless the seam fits it."""
    import airflow
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dagrun import DagRun

    refusal = "Refusing to schedule: managed DAG runs could run twice."
    try:
        line = check_airflow_version(airflow.__version__, COMPONENT)
    except UnsupportedAirflowVersion as err:
        raise SeamUnavailable(f"{err}. {refusal}") from None
    owners = {"SchedulerJobRunner": SchedulerJobRunner, "DagRun": DagRun}
    for name, params in SEAM_SIGNATURES.items():
        owner, attr = name.split(".")
        method = getattr(owners[owner], attr, None)
        if method is None or list(inspect.signature(method).parameters)[: len(params)] != params:
            changed = f"{name} is missing or changed in Airflow {airflow.__version__}"
            raise SeamUnavailable(f"{COMPONENT}: {changed}. {refusal}")
    return line
