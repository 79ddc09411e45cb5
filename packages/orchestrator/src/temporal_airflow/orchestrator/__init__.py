"""Airflow plugin that hands the DagRuns of Temporal-managed DAGs to Temporal workflows."""
