"""A DAG file that does not import: Airflow records the error and the DAG never becomes triggerable."""

from __future__ import annotations

raise RuntimeError("chaos_broken: this DAG file is broken on purpose")
