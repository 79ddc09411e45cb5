"""A newcomer's first command, cold: ``temporal-airflow run`` vs ``airflow dags test`` on the same DAG file.

    uv run python benchmarks/cold_run.py [--dag examples/dags/etl.py] [--runs 3]

Each run is a fresh process, timed from its start to its exit, as a user types it: ours starts an
embedded Temporal dev server, in-process workers and the warm task host, then runs the DAG;
``airflow dags test`` runs it on a SQLite metadata DB that ``airflow db migrate`` prepared beforehand
(untimed: an Airflow user has a DB already). Prints every run and the medians side by side. Not a test:
figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall


def _airflow_env(home: Path) -> dict[str, str]:
    return dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dag", type=Path, default=ROOT / "examples" / "dags" / "etl.py")
    parser.add_argument("--dag-id", default="example_etl")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dag = args.dag.resolve()

    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cold-run-") as tmp:
        home = Path(tmp) / "airflow"
        (home / "dags").mkdir(parents=True)
        copy = home / "dags" / dag.name  # `dags test -f` takes files in the DAGs folder
        copy.write_text(dag.read_text())
        env = _airflow_env(home)
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
        for run in range(args.runs):
            ours.append(_timed([_bin("temporal-airflow"), "run", str(dag)], dict(os.environ)))
            theirs.append(_timed([_bin("airflow"), "dags", "test", args.dag_id, "-f", str(copy)], env))
            print(f"run {run + 1}: temporal-airflow run {ours[-1]:.1f} s, airflow dags test {theirs[-1]:.1f} s")
    mine, base = statistics.median(ours), statistics.median(theirs)
    print(f"\n{dag.name}, cold, median of {args.runs} ({os.cpu_count()} CPUs)")
    print(f"  temporal-airflow run   {mine:6.1f} s")
    print(f"  airflow dags test      {base:6.1f} s")
    print(f"  ratio                  {mine / base:6.2f}x")


if __name__ == "__main__":
    main()
