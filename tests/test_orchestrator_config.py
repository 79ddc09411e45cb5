"""The orchestrator's settings: `[temporal]` in Airflow's config, overridden by `TEMPORAL_*` variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from temporal_airflow.orchestrator.config import TemporalSettings

ENV_VARS = ("ADDRESS", "NAMESPACE", "API_KEY", "TLS_CLIENT_CERT_PATH", "TLS_CLIENT_KEY_PATH", "MANAGED_DAGS", "UI_URL")
CONFIG_KEYS = ("ADDRESS", "NAMESPACE", "API_KEY", "TLS_CERT_PATH", "TLS_KEY_PATH", "MANAGED_DAGS", "UI_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(f"TEMPORAL_{var}", raising=False)
    for key in CONFIG_KEYS:
        monkeypatch.delenv(f"AIRFLOW__TEMPORAL__{key}", raising=False)


def test_airflow_config_section_is_read_and_env_vars_override_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TEMPORAL__ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("AIRFLOW__TEMPORAL__NAMESPACE", "from-config")
    monkeypatch.setenv("AIRFLOW__TEMPORAL__MANAGED_DAGS", "etl_*, reports")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "from-env")
    settings = TemporalSettings.load()
    assert (settings.address, settings.namespace) == ("temporal.internal:7233", "from-env")
    assert settings.manages("etl_daily", set()) and settings.manages("reports", set())
    assert settings.manages("anything", {"temporal"}) and not settings.manages("other", {"finance"})


def test_temporal_cloud_api_key_from_config_alone_turns_tls_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TEMPORAL__ADDRESS", "ns.acct.tmprl.cloud:7233")
    monkeypatch.setenv("AIRFLOW__TEMPORAL__NAMESPACE", "ns.acct")
    monkeypatch.setenv("AIRFLOW__TEMPORAL__API_KEY", "key-123")
    kwargs = TemporalSettings.load().connect_kwargs()
    assert kwargs["target_host"] == "ns.acct.tmprl.cloud:7233" and kwargs["namespace"] == "ns.acct"
    assert kwargs["api_key"] == "key-123" and kwargs["tls"] is True


def test_mtls_from_config_alone_loads_the_client_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_bytes(b"CERT")
    (tmp_path / "client.key").write_bytes(b"KEY")
    monkeypatch.setenv("AIRFLOW__TEMPORAL__TLS_CERT_PATH", str(tmp_path / "client.pem"))
    monkeypatch.setenv("AIRFLOW__TEMPORAL__TLS_KEY_PATH", str(tmp_path / "client.key"))
    tls = TemporalSettings.load().connect_kwargs()["tls"]
    assert isinstance(tls, TLSConfig) and (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")


def test_a_certificate_without_its_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(tmp_path / "client.pem"))
    with pytest.raises(ValueError, match="tls_cert_path and tls_key_path must be set together"):
        TemporalSettings.load().connect_kwargs()


def test_run_links_to_the_temporal_ui_when_its_url_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_UI_URL", "https://temporal.example.com/")
    link = TemporalSettings.load().workflow_ui_link("airflow-etl-manual__2025-01-01T00:00:00+00:00")
    assert link == (
        "https://temporal.example.com/namespaces/default/workflows/airflow-etl-manual__2025-01-01T00%3A00%3A00%2B00%3A00"
    )
