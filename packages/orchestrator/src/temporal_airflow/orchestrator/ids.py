"""The one naming scheme of managed runs' workflows: ``airflow:{dag_id}:{run_id}:clear{clear_number}``.

One workflow id per DagRun *and* clear number: the first execution of a run is ``clear0``; clearing
tasks bumps Airflow's ``clear_number`` and the re-run is a new workflow id. Together with the start
policy (reject a duplicate id, use an existing running one) Temporal can never hold two executions for
one run and clear number, whoever starts them and however often.

The id is unambiguous although ``-``, ``:`` and most characters are legal in run ids: a dag_id never
holds ``:`` (Airflow allows ``[\\w.-]``; ``%`` and ``:`` are percent-escaped anyway), the clear number is
the last segment, so the run id is everything between the first and the last separator. An id longer than
Temporal's 1000-byte limit keeps a readable prefix of the dag_id and replaces the names by their SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "airflow"
MAX_ID_BYTES = 1000


def workflow_id(dag_id: str, run_id: str, clear_number: int = 0) -> str:
    """The workflow id of a DagRun's execution for ``clear_number``."""
    dag = dag_id.replace("%", "%25").replace(":", "%3A")
    wid = f"{PREFIX}:{dag}:{run_id}:clear{clear_number}"
    if len(wid.encode()) <= MAX_ID_BYTES:
        return wid
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()
    return f"{PREFIX}:{dag[:100]}:sha256-{digest}:clear{clear_number}"


@dataclass(frozen=True)
class RunRef:
    """One execution's worth of a managed DagRun: its names and the clear number it runs for."""

    dag_id: str
    run_id: str
    clear_number: int = 0

    @property
    def workflow_id(self) -> str:
        return workflow_id(self.dag_id, self.run_id, self.clear_number)
