"""Temporal's SDK metrics from every temporal-airflow process, switched on by configuration.

Operators watch workers through the SDK's own metrics: workflow and activity schedule-to-start latency,
task slots available and used, workflow-task failures, sticky-cache hits. Every client and worker of a
process shares one SDK runtime, which exports them when one of these is set (read once per process):

``TEMPORAL_AIRFLOW_PROMETHEUS_BIND``
    a Prometheus endpoint (``/metrics``) at ``HOST:PORT``; a bare ``PORT`` binds 127.0.0.1, never every
    interface unless asked for;
``TEMPORAL_AIRFLOW_OTLP_METRICS_URL``
    an OpenTelemetry collector's OTLP/gRPC endpoint (``http://collector:4317``) to push them to.

No Airflow import here: the workflow and activity workers, ``run`` and the orchestrator plugin use it.
"""

from __future__ import annotations

import functools
import os

from temporalio.runtime import OpenTelemetryConfig, PrometheusConfig, Runtime, TelemetryConfig

PROMETHEUS_ENV = "TEMPORAL_AIRFLOW_PROMETHEUS_BIND"
OTLP_ENV = "TEMPORAL_AIRFLOW_OTLP_METRICS_URL"


def prometheus_address(value: str) -> str:
    """``HOST:PORT`` for a configured bind value; a bare port is on loopback."""
    value = value.strip()
    if value.isdigit():
        return f"127.0.0.1:{value}"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{PROMETHEUS_ENV} must be PORT or HOST:PORT, got {value!r}")
    return value


@functools.cache
def metrics_runtime() -> Runtime | None:
    """This process's SDK runtime exporting metrics as configured, or ``None`` (the SDK's default runtime)."""
    prometheus, otlp = os.environ.get(PROMETHEUS_ENV, "").strip(), os.environ.get(OTLP_ENV, "").strip()
    if prometheus and otlp:
        raise ValueError(f"set {PROMETHEUS_ENV} or {OTLP_ENV}, not both")
    if prometheus:
        metrics: PrometheusConfig | OpenTelemetryConfig = PrometheusConfig(bind_address=prometheus_address(prometheus))
    elif otlp:
        metrics = OpenTelemetryConfig(url=otlp)
    else:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=metrics, global_tags={"service": "temporal-airflow"}))
