"""Tracing is off unless the standard OTEL_* variables ask for it, and then exports over OTLP/HTTP."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker.runtime.telemetry import OtelSettings, build_provider, exporter_choice

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ],
)
def test_the_variables_choose_the_exporter(monkeypatch: pytest.MonkeyPatch, variables, expected) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert exporter_choice(OtelSettings()) == expected


def test_no_provider_unless_asked() -> None:
    assert build_provider(OtelSettings()) is None


def test_an_endpoint_gives_an_otlp_http_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = build_provider(OtelSettings())
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "dms-upload-worker"
    provider.shutdown()


def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dms-worker-eu10")
    provider = build_provider(OtelSettings(), exporter=InMemorySpanExporter())
    assert provider is not None and provider.resource.attributes["service.name"] == "dms-worker-eu10"
    provider.shutdown()
