"""Turns on the OpenTelemetry SDK for this process, only when the standard ``OTEL_*`` variables ask for it.

Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` is set, and always off with ``OTEL_SDK_DISABLED=true``. Spans go out in batches over
OTLP/HTTP (protobuf); the SDK reads the rest of its configuration (headers, sampler, resource attributes,
batch sizes) from the same variables itself. Without the SDK the spans of ``worker.tracing`` are no-ops that
still carry a command's incoming trace context on to its result event.
"""

from __future__ import annotations

from typing import Literal

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)

DEFAULT_SERVICE_NAME = "dms-upload-worker"


class OtelSettings(BaseSettings):
    """The standard OpenTelemetry variables this module decides on (``OTEL_`` prefix, no ``.env``)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore", case_sensitive=False)

    sdk_disabled: bool = False
    traces_exporter: str | None = None  # otlp, console or none
    exporter_otlp_endpoint: str | None = None
    exporter_otlp_traces_endpoint: str | None = None
    exporter_otlp_protocol: str | None = None
    exporter_otlp_traces_protocol: str | None = None
    service_name: str | None = None


ExporterChoice = Literal["otlp", "console"] | None


def exporter_choice(otel: OtelSettings) -> ExporterChoice:
    """Which exporter the variables ask for (pure): None means tracing stays off."""
    if otel.sdk_disabled:
        return None
    names = {n.strip().lower() for n in (otel.traces_exporter or "").split(",") if n.strip()}
    if names:
        if "otlp" in names:
            return "otlp"
        return "console" if "console" in names else None  # "none", or one we do not ship
    return "otlp" if otel.exporter_otlp_endpoint or otel.exporter_otlp_traces_endpoint else None


def build_provider(
    otel: OtelSettings, default_service_name: str = DEFAULT_SERVICE_NAME, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The tracer provider the variables ask for, or None. ``exporter`` replaces the one they name."""
    choice = exporter_choice(otel)
    if exporter is None:
        if choice is None:
            return None
        exporter = _otlp_exporter(otel) if choice == "otlp" else ConsoleSpanExporter()
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; the default only fills a gap.
    resource = Resource.create({} if otel.service_name else {SERVICE_NAME: default_service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter(otel: OtelSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    protocol = otel.exporter_otlp_traces_protocol or otel.exporter_otlp_protocol
    if protocol and protocol != "http/protobuf":
        log.warning("otel_protocol_unsupported", protocol=protocol, using="http/protobuf")
    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from the OTEL_* variables


def configure(default_service_name: str = DEFAULT_SERVICE_NAME) -> TracerProvider | None:
    """Installs the SDK for the whole process when asked to (once: OpenTelemetry allows one provider).
    It flushes its spans at exit by itself."""
    otel = OtelSettings()
    provider = build_provider(otel, default_service_name)
    if provider is None:
        return None
    trace.set_tracer_provider(provider)
    log.info("tracing_enabled", exporter=exporter_choice(otel), service=otel.service_name or default_service_name)
    return provider
