"""What a task try says to Airflow's Execution API, and an in-memory API for the standalone mode.

Airflow 3's task runner talks to its API server over HTTP (the Execution API) for everything outside
the task: the run's context, XComs, variables, connections, state changes, branch skips.

* :class:`RecordingTransport` wraps any Execution-API transport and records what the try reported
  (final state, XComs pushed, tasks to skip, the trigger it deferred to, the date a sensor asked to
  be rescheduled at) for the workflow, whatever answers the calls. A call that meets a server error
  or a lost connection is retried until it lands, as Airflow's own client retries them (the task
  runner's in-process client does not): a short DB outage never fails a try whose body worked (an
  XCom push), and a try's outcome is what the API accepted, never what it failed to record.
* :class:`StandaloneExecutionAPI` answers those calls with no Airflow DB: from the activity's input
  (run context, upstream XComs, variables, a sensor's earlier pokes, the method and event a deferred
  task resumes with).
* In deep mode the calls go to Airflow's own in-process Execution API on the real metadata DB.

Both plug into the Task SDK's own HTTP client as transports of its library (``httpx``, or ``httpx2`` from
Airflow 3.4: :func:`temporal_airflow.activities.airflow_compat.sdk_http`), so the task runs through
Airflow's unmodified runner (templates, context, TaskFlow arguments, branching, retries' decision).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from temporal_airflow.activities.airflow_compat import sdk_http
from temporal_airflow.models import ActivityTaskInput, XComEntry

if TYPE_CHECKING:  # the same API under either name
    import httpx as http
else:
    http = sdk_http()

XCOM_RETURN_KEY = "return_value"

log = structlog.get_logger(logger_name="temporal_airflow.execution_api")


@dataclass
class TaskOutcome:
    """What the task runner reported through the API."""

    state: str | None = None
    retry_delay_seconds: float | None = None
    pushed_xcoms: dict[tuple[str, int], XComEntry] = field(default_factory=dict)
    skipped_task_ids: list[str] = field(default_factory=list)
    #: ``up_for_reschedule``: when the sensor asked to poke again (ISO text, as sent).
    reschedule_date: str | None = None
    #: ``deferred``: the runner's defer payload (trigger classpath and kwargs, next method and kwargs).
    deferral: dict[str, Any] | None = None
    #: A state the API never accepted, however long it was retried (the try's outcome is unknown to it).
    undelivered_state: str | None = None


_XCOM_PATH = re.compile(r"/?xcoms/[^/]+/[^/]+/(?P<task_id>[^/]+)/(?P<key>[^/]+)")


def _encode_for_wsgi(request: http.Request) -> None:
    """Make a non-ASCII path (a ``dag_id`` like ``données``) reach the in-process API intact.

    httpx's WSGI transport puts the path, percent-decoded as UTF-8, in ``PATH_INFO``; the WSGI side
    (a2wsgi, as PEP 3333 says) reads ``PATH_INFO`` as latin-1 text standing for the raw bytes. Sending
    the path's UTF-8 bytes spelled as latin-1 text gives the app the path the client meant.
    """
    path = urllib.parse.unquote(request.url.path)
    if path.isascii():
        return
    spelled = urllib.parse.quote(path.encode().decode("latin-1"), safe="/")
    query = request.url.query
    request.url = request.url.copy_with(raw_path=spelled.encode("ascii") + (b"?" + query if query else b""))


class RecordingTransport(http.BaseTransport):
    """Forwards every call to ``inner`` and records the try's outcome in :attr:`outcome`.

    Calls that get a 5xx or raise (connection lost; the in-process API raises its DB's errors), state
    updates (``PATCH .../state``: success, failed, up_for_retry, skipped...) and every other call alike,
    are retried with a backoff, for at most ``state_retry_seconds`` over the whole try, before the last
    failure is passed on.
    """

    def __init__(
        self, inner: http.BaseTransport, keep_xcom_values: bool = True, state_retry_seconds: float = 120.0
    ) -> None:
        self.inner = inner
        self.keep_xcom_values = keep_xcom_values
        self.state_retry_seconds = state_retry_seconds
        self.outcome = TaskOutcome()
        self._state_deadline: float | None = None

    def handle_request(self, request: http.Request) -> http.Response:
        meant = request.url
        _encode_for_wsgi(request)
        response = self._deliver(request, request.method == "PATCH" and meant.path.endswith("/state"))
        request.url = meant
        if response.status_code < 400:
            self._observe(request)
        return response

    def _deliver(self, request: http.Request, is_state: bool) -> http.Response:
        delay = 0.5
        while True:
            answer: http.Response | Exception
            try:
                answer = self.inner.handle_request(request)
            except Exception as err:
                answer = err
            if isinstance(answer, http.Response) and answer.status_code < 500:
                if is_state:
                    self.outcome.undelivered_state = None
                return answer
            if self._state_deadline is None:
                self._state_deadline = time.monotonic() + self.state_retry_seconds
            if time.monotonic() + delay > self._state_deadline:
                if is_state:
                    self.outcome.undelivered_state = json.loads(request.content)["state"]
                if isinstance(answer, Exception):
                    raise answer
                return answer
            what = "the task's state" if is_state else f"{request.method} {request.url.path}"
            log.warning(f"Execution API did not record {what}; retrying", failure=_describe(answer))
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _observe(self, request: http.Request) -> None:
        path = request.url.path
        if request.method == "PATCH" and path.endswith("/state"):
            payload = json.loads(request.content)
            self.outcome.state = payload["state"]
            self.outcome.retry_delay_seconds = payload.get("retry_delay_seconds")
            self.outcome.reschedule_date = payload.get("reschedule_date")
            self.outcome.deferral = payload if payload["state"] == "deferred" else None
        elif request.method == "PATCH" and path.endswith("/skip-downstream"):
            tasks = json.loads(request.content)["tasks"]
            self.outcome.skipped_task_ids.extend(t if isinstance(t, str) else t[0] for t in tasks)
        elif request.method in ("POST", "DELETE") and (match := _XCOM_PATH.fullmatch(path)):
            params = request.url.params
            map_index = int(params.get("map_index", -1))
            key = (match["key"], map_index)
            if request.method == "DELETE":
                self.outcome.pushed_xcoms.pop(key, None)
                return
            mapped_length = int(params["mapped_length"]) if "mapped_length" in params else None
            if not self.keep_xcom_values and mapped_length is None and match["key"] != XCOM_RETURN_KEY:
                return  # deep mode: values live in Airflow's DB; the workflow only needs return values exist
            self.outcome.pushed_xcoms[key] = XComEntry(
                task_id=match["task_id"],
                key=match["key"],
                value_json=request.content.decode() if self.keep_xcom_values else "null",
                map_index=map_index,
                mapped_length=mapped_length,
            )


_XCOM_ROUTE = r"xcoms/(?P<dag_id>[^/]+)/(?P<run_id>[^/]+)/(?P<task_id>[^/]+)/(?P<key>[^/]+)"
#: The calls the standalone API answers: method, path and handler (compiled once, in the task host).
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(path), handler)
    for method, path, handler in [
        ("PATCH", r"task-instances/[^/]+/run", "_start"),
        ("PATCH", r"task-instances/[^/]+/state", "_state"),
        ("PUT", r"task-instances/[^/]+/heartbeat", "_no_content"),
        ("PUT", r"task-instances/[^/]+/rtif", "_rendered_fields"),
        ("PATCH", r"task-instances/[^/]+/skip-downstream", "_skip_downstream"),
        ("PATCH", r"task-instances/[^/]+/rendered-map-index", "_ok"),
        ("GET", r"task-instances/[^/]+/previous-successful-dagrun", "_no_previous"),
        ("GET", r"task-instances/[^/]+/validate-inlets-and-outlets", "_no_inactive"),
        ("GET", r"task-reschedules/[^/]+/start_date", "_first_poke_start"),
        ("GET", _XCOM_ROUTE + r"/item/(?P<offset>-?\d+)", "_xcom_item"),
        ("GET", _XCOM_ROUTE + r"/slice", "_xcom_slice"),
        ("HEAD", _XCOM_ROUTE, "_xcom_count"),
        ("GET", _XCOM_ROUTE, "_xcom_get"),
        ("POST", _XCOM_ROUTE, "_xcom_set"),
        ("DELETE", _XCOM_ROUTE, "_xcom_delete"),
        ("GET", r"variables/(?P<key>[^/]+)", "_variable"),
        ("GET", r"connections/(?P<conn_id>[^/]+)", "_connection"),
    ]
]


class StandaloneExecutionAPI:
    """Serves one task try; ``outcome`` holds what the task reported."""

    def __init__(self, task_input: ActivityTaskInput) -> None:
        self.input = task_input
        self._xcoms: dict[tuple[str, str, int], str] = {
            (x.task_id, x.key, x.map_index): x.value_json for x in task_input.upstream_xcoms
        }

    def transport(self) -> RecordingTransport:
        return RecordingTransport(http.MockTransport(self.handle))

    def handle(self, request: http.Request) -> http.Response:
        path = request.url.path.lstrip("/")
        for method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if method == request.method and match:
                answer: http.Response = getattr(self, handler)(request, **match.groupdict())
                return answer
        log.warning("Execution API call not available in standalone mode", method=request.method, path=path)
        return _error(404, f"{request.method} {path} is not available in standalone mode")

    # -- task instance ------------------------------------------------------------------------------

    def _start(self, request: http.Request) -> http.Response:
        run = self.input.run
        body = {
            "dag_run": {
                "dag_id": run.dag_id,
                "run_id": run.run_id,
                "logical_date": _iso(run.logical_date),
                "data_interval_start": _iso(run.data_interval_start),
                "data_interval_end": _iso(run.data_interval_end),
                "run_after": _iso(run.run_after),
                "start_date": _iso(run.start_date),
                "end_date": None,
                "run_type": run.run_type,
                "state": "running",
                "conf": run.conf,
                "consumed_asset_events": [],
                "partition_key": None,
            },
            "max_tries": self.input.max_tries,
            "should_retry": self.input.try_number <= self.input.max_tries,
            "variables": [],
            "connections": [],
            "task_reschedule_count": self.input.reschedule.count if self.input.reschedule else 0,
        }
        if self.input.next_method:
            body.update(next_method=self.input.next_method, next_kwargs=self.input.next_kwargs or {})
        return http.Response(200, json=body)

    def _first_poke_start(self, request: http.Request) -> http.Response:
        reschedule = self.input.reschedule
        return http.Response(200, json=_iso(reschedule.first_start_date) if reschedule else None)

    def _state(self, request: http.Request) -> http.Response:
        return http.Response(204)

    def _rendered_fields(self, request: http.Request) -> http.Response:
        return http.Response(201, json={"ok": True})

    def _skip_downstream(self, request: http.Request) -> http.Response:
        return http.Response(204)

    def _no_previous(self, request: http.Request) -> http.Response:
        return http.Response(200, json={})

    def _no_inactive(self, request: http.Request) -> http.Response:
        return http.Response(200, json={"inactive_assets": []})

    def _ok(self, request: http.Request) -> http.Response:
        return http.Response(200, json={"ok": True})

    def _no_content(self, request: http.Request) -> http.Response:
        return http.Response(204)

    # -- XCom ---------------------------------------------------------------------------------------

    def _entries(self, task_id: str, key: str) -> list[tuple[int, str]]:
        return sorted((m, v) for (t, k, m), v in self._xcoms.items() if t == task_id and k == key)

    def _xcom_get(self, request: http.Request, dag_id: str, run_id: str, task_id: str, key: str):
        map_index = int(request.url.params.get("map_index", -1))
        value = self._xcoms.get((task_id, key, map_index))
        if value is None:
            return _error(404, f"XCom {task_id}.{key}[{map_index}] not found")
        return http.Response(200, json={"key": key, "value": json.loads(value)})

    def _xcom_count(self, request: http.Request, dag_id: str, run_id: str, task_id: str, key: str):
        count = len(self._entries(task_id, key))
        return http.Response(200, headers={"Content-Range": f"map_indexes {count}"})

    def _xcom_item(self, request, dag_id: str, run_id: str, task_id: str, key: str, offset: str):
        entries = self._entries(task_id, key)
        try:
            return http.Response(200, json=json.loads(entries[int(offset)][1]))
        except IndexError:
            return _error(404, f"XCom {task_id}.{key} has no item {offset}")

    def _xcom_slice(self, request: http.Request, dag_id: str, run_id: str, task_id: str, key: str):
        params = request.url.params
        bounds = [int(params[p]) if p in params else None for p in ("start", "stop", "step")]
        values = [json.loads(v) for _, v in self._entries(task_id, key)][slice(*bounds)]
        return http.Response(200, json=values)

    def _xcom_set(self, request: http.Request, dag_id: str, run_id: str, task_id: str, key: str):
        map_index = int(request.url.params.get("map_index", -1))
        mapped_length = request.url.params.get("mapped_length")
        if mapped_length is not None and int(mapped_length) > _max_map_length():
            # As Airflow's Execution API answers: a downstream task cannot map over this many values.
            return _error(
                400,
                "pushed value is too large to map as a downstream's dependency",
                reason="unmappable_return_value_length",
            )
        self._xcoms[(task_id, key, map_index)] = request.content.decode()
        return http.Response(201, json={"ok": True})

    def _xcom_delete(self, request: http.Request, dag_id: str, run_id: str, task_id: str, key: str):
        map_index = int(request.url.params.get("map_index", -1))
        self._xcoms.pop((task_id, key, map_index), None)
        return http.Response(200, json={"ok": True})

    # -- variables and connections ------------------------------------------------------------------

    def _variable(self, request: http.Request, key: str) -> http.Response:
        if key not in self.input.variables:
            return _error(404, f"Variable {key} not found", reason="not_found")
        return http.Response(200, json={"key": key, "value": self.input.variables[key]})

    def _connection(self, request: http.Request, conn_id: str) -> http.Response:
        # Connections come from the worker's environment / secrets backend, checked before this.
        return _error(404, f"Connection {conn_id} not found", reason="not_found")


def _max_map_length() -> int:
    """Airflow's ``[core] max_map_length``: how many values one task may be mapped over."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def _describe(failure: Exception | http.Response) -> str:
    if isinstance(failure, http.Response):
        try:
            failure.read()  # a streamed answer (the in-process API's) has no text until read
            text = failure.text[:200]
        except Exception as err:  # describing a failure must never fail the delivery that retries it
            text = f"(unreadable: {type(err).__name__})"
        return f"HTTP {failure.status_code}: {text}"
    return f"{type(failure).__name__}: {failure}"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _error(status: int, message: str, reason: str = "not_found") -> http.Response:
    return http.Response(status, json={"detail": {"reason": reason, "message": message}})
