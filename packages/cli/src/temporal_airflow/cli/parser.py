"""``temporal-airflow``'s arguments: the parser, and ``run``'s arguments checked before anything starts.

Only the standard library here: parsing the command line must not wait for Temporal's SDK or Airflow to
import, and a bad argument is refused before any process starts.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def _parse_conf(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--conf is not valid JSON: {err}") from None
    if not isinstance(conf, dict):
        raise SystemExit("--conf must be a JSON object")
    return conf


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise SystemExit(f"--logical-date is not an ISO-8601 date: {err}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _parse_vars(items: list[str]) -> dict[str, str]:
    variables = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--var expects KEY=VALUE, got {item!r}")
        variables[key] = value
    return variables


@dataclass(frozen=True)
class RunRequest:
    """``run``'s arguments, checked before anything starts (errors reach the terminal)."""

    dag_path: str
    conf: dict[str, Any]
    logical_date: datetime | None
    variables: dict[str, str]

    @classmethod
    def of(cls, args: argparse.Namespace) -> RunRequest:
        dag_path = os.path.abspath(args.dag_file)
        if not os.path.exists(dag_path):
            raise SystemExit(f"error: DAG file not found: {args.dag_file}")
        return cls(dag_path, _parse_conf(args.conf), _parse_date(args.logical_date), _parse_vars(args.var))


#: The command's one-line description.
DESCRIPTION = "Run Apache Airflow DAG runs as durable Temporal workflows, or run their workers."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="temporal-airflow", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one DAG file as a Temporal workflow and wait for it")
    run.add_argument("dag_file", help="path to the DAG file")
    run.add_argument("--dag-id", help="DAG to run when the file defines several")
    run.add_argument("--conf", help="DAG run conf as a JSON object")
    run.add_argument("--logical-date", help="logical date (ISO 8601); default: now")
    run.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="Airflow variable")
    run.add_argument("--output", choices=["text", "json"], default="text")
    run.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS, else embedded)")
    run.add_argument("--workflow-id", help="workflow id (default: generated)")
    run.add_argument(
        "--local-workers", action="store_true", help="also run workers in-process when an address is given"
    )
    run.add_argument(
        "--verbose", action="store_true", help="show Airflow's own output on the terminal instead of a log file"
    )
    up = sub.add_parser("up", help="start a complete local deep-integration stack until Ctrl-C")
    up.add_argument("--dags-folder", default="examples/dags", help="DAGs folder (default: examples/dags)")
    up.add_argument(
        "--workdir",
        default=".temporal-airflow/stack",
        help="data, secrets and logs, kept for the next start (default: .temporal-airflow/stack)",
    )
    up.add_argument("--stack-process", action="store_true", help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run workers until interrupted")
    worker.add_argument("kind", choices=["workflows", "activities", "all"], nargs="?", default="all")
    worker.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS)")
    return parser
