"""``TemporalAirflowPlugin``: workflows and activities in one worker, for a user's own client.

Add ``TemporalAirflowPlugin()`` to your own ``Client`` and every worker of it runs DAG runs end to end,
with the shared data converter. It combines the two worker packages, which do not depend on each other,
so it lives in the package that depends on both.
"""

from __future__ import annotations

from temporal_airflow.activities.plugin import AirflowActivitiesPlugin
from temporal_airflow.models.converter import StorageSettings
from temporal_airflow.workflows.plugin import WORKFLOWS, airflow_clock


class TemporalAirflowPlugin(AirflowActivitiesPlugin):
    """Workflows and activities: one worker runs whole DAG runs."""

    def __init__(self, storage: StorageSettings | None = None) -> None:
        storage = storage or StorageSettings.from_env()
        super().__init__(storage, name="temporal-airflow")
        self.workflows = WORKFLOWS
        self.run_context = airflow_clock
