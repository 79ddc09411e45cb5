"""Which Apache Airflow releases temporal-airflow supports, declared once for every package.

Each package that imports Airflow (workflows, activities, orchestrator, cli) has its own
``airflow_compat`` door that picks version-dependent branches; they all check the installed version
against this one range first, so an Airflow outside it fails at start with one clear line in every
component instead of an ``AttributeError`` deep inside a run. The packages' metadata
(``apache-airflow>=3.2,<3.5``) states the same range; a test keeps the two in step. No Airflow import
here: this module only reads a version string.
"""

from __future__ import annotations

import re

#: The oldest supported Airflow release line (inclusive) and the first unsupported one (exclusive).
OLDEST_SUPPORTED = (3, 2)
FIRST_UNSUPPORTED = (3, 5)
#: As the packages' metadata writes it.
SUPPORTED_SPECIFIER = ">=3.2,<3.5"
#: For people: the README's version matrix and error messages.
SUPPORTED_DESCRIPTION = "Airflow 3.2, 3.3 and 3.4"


class UnsupportedAirflowVersion(RuntimeError):
    """The installed Airflow is outside :data:`SUPPORTED_SPECIFIER` (not retryable: reinstall)."""


def release_line(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``3.4.0b2`` or ``3.3.2.post1``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise UnsupportedAirflowVersion(f"cannot read the Airflow version {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_airflow_version(version: str, component: str = "temporal-airflow") -> tuple[int, int]:
    """Return the release line of ``version``; raise with one clear line when it is not supported."""
    line = release_line(version)
    if not OLDEST_SUPPORTED <= line < FIRST_UNSUPPORTED:
        raise UnsupportedAirflowVersion(
            f"{component} supports {SUPPORTED_DESCRIPTION} (apache-airflow{SUPPORTED_SPECIFIER}); "
            f"found Airflow {version}"
        )
    return line
