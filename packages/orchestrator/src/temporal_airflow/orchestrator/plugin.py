"""The Airflow plugin, registered through the ``airflow.plugins`` entry point of this distribution."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from temporal_airflow.orchestrator import listener


class TemporalOrchestratorPlugin(AirflowPlugin):
    """Routes runs of Temporal-managed DAGs to Temporal; other DAGs keep Airflow's executors."""

    name = "temporal_orchestrator"
    listeners = [listener]
