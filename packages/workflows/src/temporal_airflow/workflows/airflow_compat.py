"""The workflows package's one door to Airflow's private APIs: the version guard, then every patch.

Why: the DAG-run workflows run Airflow's own scheduling code inside workflow turns, and that needs a few
changes to Airflow's internals: its clock reads workflow time (:mod:`~temporal_airflow.workflows.clock`),
a new DagRun hands its task-instance rows over instead of writing them all at once, a mapped-task
expansion hands back a turn's slice of the new rows, and each run's task-instance query and readiness
check see the run's frontier only. Each is a private API that moves between releases, so every one of
them, and every branch that differs between the supported releases, is chosen here and nowhere else.

Contract:

- :func:`install` is explicit and idempotent: the workflows plugin calls it when a worker or replayer
  starts, and :class:`~temporal_airflow.workflows.local_run.LocalDagRun` before it makes a run. Nothing
  is patched at import. It checks the installed Airflow against the one supported range
  (:mod:`temporal_airflow.models.airflow_support`: one clear line otherwise), then every patched
  attribute's shape (a signature Airflow changed fails here, at start, not in a run), then patches.
- Version-dependent branches are picked by a feature check, with the release line as the guard: a
  feature found on a release line that should not have it (or missing where it should be) refuses too.
  They are: where a mapped length lives (:func:`task_map_in_xcom`: the ``task_map`` table up to 3.3,
  XCom from 3.4, written by :mod:`~temporal_airflow.workflows.mapped_outputs`), the map index's column
  (:func:`map_index_column`), whether each try is a row of its own (:func:`attempts_are_rows`,
  :func:`next_attempt`, :func:`carried_try_number`: 3.4), whether a runner's retry delay is kept
  (:func:`retry_delay`: 3.3 on), and ``produce_dag_callback``'s session (:func:`produce_dag_callback`).
- :func:`patched_attributes` names what :func:`install` patched, for the test that pins them per release.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from temporal_airflow.models.airflow_support import UnsupportedAirflowVersion, check_airflow_version

COMPONENT = "temporal-airflow workflows"
#: The release line from which Airflow keeps a mapped task's length on its XCom (migration 0136 drops
#: the ``task_map`` table) and expands a mapped task from its task instance.
TASK_MAP_IN_XCOM_SINCE = (3, 4)
#: The release line from which a task instance's map index is stored as its ``region_index``.
REGIONS_SINCE = (3, 4)
#: The release line from which each try is a task-instance row of its own: a retry or a clear archives
#: the row and starts its successor with the next try number, and scheduling no longer counts the try.
ATTEMPT_ROWS_SINCE = (3, 4)
#: The release line from which a task instance keeps the delay its runner asked for (a ``retry_policy``).
RETRY_DELAY_OVERRIDE_SINCE = (3, 3)
#: Two functions that give Airflow's "now"; :mod:`clock` swaps their code.
CLOCK_MODULES = ("airflow._shared.timezones.timezone", "airflow.sdk._shared.timezones.timezone")
#: Methods replaced on each run's own ``DagRun`` object by :func:`install_run_seams`.
RUN_SEAMS = {
    "get_task_instances": ("state", "session"),
    "_get_ready_tis": ("schedulable_tis", "finished_tis", "session"),
}

#: While a workflow's turn runs: how many freshly expanded task instances Airflow may check at once.
_EXPANSION_SLICE: ContextVar[int | None] = ContextVar("temporal_airflow_expansion_slice", default=None)
#: While a workflow creates its DagRun: where Airflow's task-instance rows go instead of the DB.
_DEFERRED_ROWS: ContextVar[list[tuple[Iterator[Any], bool]] | None] = ContextVar(
    "temporal_airflow_deferred_rows", default=None
)
_LOCK = threading.Lock()
_installed: tuple[str, ...] | None = None


def check_version() -> tuple[int, int]:
    """The installed Airflow's release line; one clear line naming it and the supported ones otherwise."""
    import airflow

    return check_airflow_version(airflow.__version__, COMPONENT)


def _guarded(found: bool, since: tuple[int, int], feature: str) -> bool:
    """``found``, when the release line agrees (the feature appeared in ``since``); refuse otherwise."""
    if found != (check_version() >= since):
        import airflow

        raise UnsupportedAirflowVersion(
            f"{COMPONENT}: Airflow {airflow.__version__} {'has' if found else 'lacks'} {feature}, "
            "unlike its release line"
        )
    return found


def task_map_in_xcom() -> bool:
    """Does this Airflow keep mapped lengths on XCom (3.4) rather than in the ``task_map`` table?"""
    gone = importlib.util.find_spec("airflow.models.taskmap") is None
    return _guarded(gone, TASK_MAP_IN_XCOM_SINCE, "no airflow.models.taskmap")


@functools.cache
def map_index_column() -> str:
    """The task-instance table's column holding the map index (``region_index`` from 3.4)."""
    from airflow.models.taskinstance import TaskInstance

    regional = _guarded("region_index" in TaskInstance.__table__.c, REGIONS_SINCE, "a region_index column")
    return "region_index" if regional else "map_index"


@functools.cache
def attempts_are_rows() -> bool:
    """Is each try its own task-instance row (3.4: ``working_set``, ``prepare_db_for_next_try`` rotates)?"""
    from airflow.models.taskinstance import TaskInstance

    return _guarded("working_set" in TaskInstance.__table__.c, ATTEMPT_ROWS_SINCE, "a working_set column")


def next_attempt(ti: Any, session: Any) -> Any:
    """The row the task instance's next try runs as: the archived try's successor, carrying the next try
    number (3.4); before 3.4 the same row, whose try Airflow's scheduling counts."""
    return ti.prepare_db_for_next_try(session) if attempts_are_rows() else ti


def carried_try_number(try_number: int) -> int:
    """The try number to give a row whose try (``try_number``) was in flight, so that scheduling it again
    starts the same try: before 3.4 scheduling adds one, from 3.4 it keeps it (a first try aside)."""
    return try_number if attempts_are_rows() else max(try_number - 1, 0)


@functools.cache
def retry_delay_stored() -> bool:
    """Does a task instance keep its runner's retry delay (``retry_delay_override``, from 3.3)?"""
    from airflow.models.taskinstance import TaskInstance

    stored = "retry_delay_override" in TaskInstance.__table__.c
    return _guarded(stored, RETRY_DELAY_OVERRIDE_SINCE, "a retry_delay_override column")


def retry_delay(ti: Any) -> float | None:
    """The retry delay the task's runner asked for, if this Airflow keeps one."""
    return ti.retry_delay_override if retry_delay_stored() else None  # type: ignore[no-any-return]


def set_retry_delay(ti: Any, seconds: float | None) -> None:
    """Keep the runner's retry delay for Airflow's ``next_retry_datetime`` (before 3.3 no runner asks)."""
    if retry_delay_stored():
        ti.retry_delay_override = seconds


def produce_dag_callback(dag_run: Any, session: Any, **request: Any) -> Any:
    """``DagRun.produce_dag_callback(**request)``, given the run's session where it takes one (3.4)."""
    produce = dag_run.produce_dag_callback
    takes_session = "session" in inspect.signature(produce).parameters
    return produce(**request, session=session) if takes_session else produce(**request)


@dataclass(frozen=True)
class _Patch:
    """One attribute of an Airflow class replaced by a wrapper of the original."""

    owner: type
    name: str
    parameters: tuple[str, ...]
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
    is_classmethod: bool = False

    @property
    def dotted(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    def original(self) -> Callable[..., Any]:
        found = getattr(self.owner, self.name)
        return found.__func__ if self.is_classmethod else found  # type: ignore[no-any-return]

    def check(self) -> None:
        _require_parameters(self.dotted, self.original(), self.parameters)

    def apply(self) -> None:
        wrapper = functools.wraps(self.original())(self.wrap(self.original()))
        setattr(self.owner, self.name, classmethod(wrapper) if self.is_classmethod else wrapper)


def _require_parameters(dotted: str, func: Any, wanted: tuple[str, ...]) -> None:
    if not callable(func):
        raise UnsupportedAirflowVersion(f"{COMPONENT}: {dotted} is not callable on this Airflow")
    found = inspect.signature(func).parameters
    missing = [name for name in wanted if name not in found]
    if missing:
        raise UnsupportedAirflowVersion(f"{COMPONENT}: {dotted} has no parameter {missing} on this Airflow")


def _sliced(expand: Callable[..., Any]) -> Callable[..., Any]:
    """A mapped-task expansion handing back only the first slice of its new task instances.

    Airflow checks the dependencies of every instance an expansion returns in the same pass: seconds
    for thousands of indexes. Inside a workflow turn the rest stay in the DB (state ``None``, already
    expanded) and are checked a turn's worth at a time by the run's frontier. Elsewhere, unchanged.
    """

    def expand_in_slices(*args: Any, **kwargs: Any) -> Any:
        tis, total = expand(*args, **kwargs)
        limit = _EXPANSION_SLICE.get()
        return (tis if limit is None else tis[:limit]), total

    return expand_in_slices


def _deferred(create: Callable[..., Any]) -> Callable[..., Any]:
    """``DagRun._create_task_instances``, handing the (lazy) rows to the run when it asks.

    ``verify_integrity`` builds one ``TaskInstance`` per task to make each row (~1 ms each): for a big DAG
    that is seconds in the workflow's first activation. Inside a workflow the rows are written a batch per
    activation instead, from the same generator; elsewhere, unchanged.
    """
    signature = inspect.signature(create)

    def create_task_instances_later(*args: Any, **kwargs: Any) -> Any:
        sink = _DEFERRED_ROWS.get()
        if sink is None:
            return create(*args, **kwargs)
        given = signature.bind(*args, **kwargs).arguments
        sink.append((iter(given["tasks"]), bool(given["hook_is_noop"])))
        return None

    return create_task_instances_later


def _patches() -> list[_Patch]:
    from airflow.models.dagrun import DagRun

    rows = _Patch(DagRun, "_create_task_instances", ("tasks", "hook_is_noop", "session"), _deferred)
    if task_map_in_xcom():
        from airflow.models.taskinstance import TaskInstance

        return [rows, _Patch(TaskInstance, "expand_mapped_task", ("self", "session"), _sliced)]
    from airflow.models.taskmap import TaskMap

    return [rows, _Patch(TaskMap, "expand_mapped_task", ("task", "run_id", "session"), _sliced, is_classmethod=True)]


def _check_clock() -> None:
    for name in CLOCK_MODULES:
        func = importlib.import_module(name).utcnow
        if not isinstance(func, types.FunctionType) or func.__code__.co_freevars:
            raise UnsupportedAirflowVersion(f"{COMPONENT}: {name}.utcnow has an unexpected shape")


def _check_run_seams() -> None:
    from airflow.models.dagrun import DagRun

    for name, parameters in RUN_SEAMS.items():
        _require_parameters(f"airflow.models.dagrun.DagRun.{name}", getattr(DagRun, name, None), parameters)


def install() -> None:
    """Check this Airflow, then patch it (once per process; later calls only return)."""
    global _installed
    with _LOCK:
        if _installed is not None:
            return
        check_version()
        patches = _patches()
        map_index_column(), attempts_are_rows(), retry_delay_stored()  # each branch decided (or refused) now
        _check_clock()
        _check_run_seams()
        for patch in patches:
            patch.check()
        from temporal_airflow.workflows import clock

        clock.install(CLOCK_MODULES)
        for patch in patches:
            patch.apply()
        seams = tuple(f"airflow.models.dagrun.DagRun.{name} (per run)" for name in RUN_SEAMS)
        _installed = tuple(f"{name}.utcnow" for name in CLOCK_MODULES) + tuple(p.dotted for p in patches) + seams


def patched_attributes() -> tuple[str, ...]:
    """What :func:`install` patched on this Airflow (installing first if needed)."""
    install()
    assert _installed is not None
    return _installed


def install_run_seams(run: Any, **seams: Callable[..., Any]) -> None:
    """Replace :data:`RUN_SEAMS` on one run's ``DagRun`` object (the class stays as it is)."""
    if set(seams) != set(RUN_SEAMS):
        raise ValueError(f"expected the run seams {sorted(RUN_SEAMS)}, got {sorted(seams)}")
    for name, replacement in seams.items():
        setattr(run, name, replacement)


@contextmanager
def expansion_slice(limit: int) -> Iterator[None]:
    """While inside: a mapped-task expansion hands Airflow at most ``limit`` of its new task instances."""
    token = _EXPANSION_SLICE.set(limit)
    try:
        yield
    finally:
        _EXPANSION_SLICE.reset(token)


@contextmanager
def deferred_rows() -> Iterator[list[tuple[Iterator[Any], bool]]]:
    """While inside: the rows a new DagRun would create are collected (rows, ``hook_is_noop``) instead."""
    sink: list[tuple[Iterator[Any], bool]] = []
    token = _DEFERRED_ROWS.set(sink)
    try:
        yield sink
    finally:
        _DEFERRED_ROWS.reset(token)
