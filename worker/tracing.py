"""Spans and W3C trace context for every stage (the OpenTelemetry API only; ``worker.runtime.telemetry`` turns
the SDK on, and until then every span here is a no-op that still passes the caller's trace context along).

A command's trace context travels in its CloudEvent (the distributed-tracing extension attributes
``traceparent`` / ``tracestate``) or, failing that, in the AMQP headers of those names; the worker continues
it in one span per command and writes its own context into the result event the same two ways. Span
attributes name tenants, documents, commands, versions and error codes: never a secret or file content.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace import SpanKind as SpanKind  # re-exported for the stages
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.amqp.names import TRACE_HEADERS
from worker.contracts import COMMAND_TYPES, CloudEvent
from worker.errors import WorkerError

tracer = trace.get_tracer("dms-upload-worker")
_w3c = TraceContextTextMapPropagator()

# Attribute names (OpenTelemetry semantic conventions where they exist).
TENANT = "dms.tenant_id"
DOCUMENT = "dms.document_id"
COMMAND_ID = "dms.command_id"  # the CloudEvent id
COMMAND_SOURCE = "dms.command_source"
COMMAND_TYPE = "dms.command_type"
OUTCOME = "dms.outcome"
ATTEMPT = "dms.attempt"
ATTEMPTS = "dms.attempts"
VERSION_LABEL = "dms.version_label"
OBJECT_ID = "dms.object_id"
REPOSITORY = "dms.repository_id"
ERROR_CODE = "dms.error_code"
OPERATION = "dms.operation"
SHARD = "dms.shard"


def attributes(**values: Any) -> dict[str, Any]:
    """Keyword names -> the attribute names above; ``None`` values are left out (OpenTelemetry refuses them)."""
    names = {
        "tenant_id": TENANT,
        "document_id": DOCUMENT,
        "command_id": COMMAND_ID,
        "command_source": COMMAND_SOURCE,
        "command_type": COMMAND_TYPE,
        "shard": SHARD,
    }
    return {
        names.get(k, k): v if isinstance(v, bool | int | float) else str(v)
        for k, v in values.items()
        if v is not None and v != ""
    }


def command_attributes(event: CloudEvent[Any]) -> dict[str, Any]:
    data = event.data
    return attributes(
        command_id=event.id,
        command_source=event.source,
        command_type=event.type,
        tenant_id=getattr(data, "tenant_id", None),
        document_id=getattr(data, "document_id", None),
    )


# -- propagation -----------------------------------------------------------------------------------


def carrier(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace fields of a CloudEvent or AMQP headers as text (header values may arrive as bytes)."""
    found: dict[str, str] = {}
    for name in TRACE_HEADERS:
        value = (headers or {}).get(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        if isinstance(value, str) and value:
            found[name] = value
    return found


def event_fields(event: CloudEvent[Any] | None) -> dict[str, str]:
    return carrier({name: getattr(event, name, None) for name in TRACE_HEADERS}) if event is not None else {}


def incoming_context(event: CloudEvent[Any] | None, headers: Mapping[str, Any] | None) -> Context | None:
    """The producer's trace context: the CloudEvent's extension attributes first (they survive any
    republishing), else the AMQP headers; None when neither carries a valid one."""
    for fields in (event_fields(event), carrier(headers)):
        if "traceparent" in fields:
            context = _w3c.extract(fields)
            if trace.get_current_span(context).get_span_context().is_valid:
                return context
    return None


def current_fields() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty when there is no valid one."""
    fields: dict[str, str] = {}
    _w3c.inject(fields)
    return fields


def stamp(event: CloudEvent[Any]) -> dict[str, str]:
    """Writes the current trace context into the event; returns it as AMQP headers for the same message."""
    fields = current_fields()
    for name in TRACE_HEADERS:
        if name in fields:
            setattr(event, name, fields[name])
    return fields


# -- spans -----------------------------------------------------------------------------------------


def mark_error(span: Span, error: BaseException | None) -> None:
    """Error code and status on the span; the message only for our own errors (they never hold secrets)."""
    if error is None:
        return
    if isinstance(error, WorkerError):
        span.set_attribute(ERROR_CODE, error.code)
        span.set_attribute("error.type", error.code)
        span.set_status(Status(StatusCode.ERROR, f"{error.code}: {error.message[:200]}"))
    else:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    context: Context | None = None,
) -> Iterator[Span]:
    """A current span that records a ``WorkerError``'s code (exceptions are not recorded with their text)."""
    if context is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK: the API's span would be the current span again (same context, records nothing), so the
        # attach and detach are skipped (a few per command: about 2 % of the worker's CPU).
        yield trace.get_current_span()
        return
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            mark_error(current, exc)
            raise


def command_span(
    command: CloudEvent[Any] | None,
    headers: Mapping[str, Any] | None,
    ids: Mapping[str, Any],
    command_id: str,
    shard: int | None,
) -> contextlib.AbstractContextManager[Span]:
    """The span of one command in the worker, from delivery to ack: a child of the producer's span when the
    command carries its context, else the root of a new trace."""
    command_type = command.type if command is not None else ids.get("command_type") or "unknown"
    found = attributes(
        command_id=command_id,
        command_source=command.source if command is not None else None,
        command_type=command_type,
        tenant_id=ids.get("tenant_id"),
        document_id=ids.get("document_id"),
        shard=shard,
    )
    found |= {"messaging.system": "rabbitmq", "messaging.operation.type": "process"}
    name = f"process {command_type if command_type in COMMAND_TYPES else 'unknown'}"  # never a name from input
    return span(name, SpanKind.CONSUMER, found, incoming_context(command, headers) or Context())


@contextlib.asynccontextmanager
async def async_span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
) -> AsyncIterator[Span]:
    """``span`` for an ``async with`` that also opens an async resource (one statement, one indentation)."""
    with span(name, kind, attributes) as current:
        yield current


def record_outcome(current: Span, outcome: str, result: Any, error: WorkerError | None, attempts: int) -> None:
    """What became of the command, on its span."""
    current.set_attribute(OUTCOME, outcome)
    current.set_attribute(ATTEMPTS, attempts)
    for attribute, field in ((VERSION_LABEL, "version_label"), (OBJECT_ID, "object_id"), (REPOSITORY, "repository_id")):
        value = getattr(result, field, None)
        if value:
            current.set_attribute(attribute, str(value))
    if error is not None and outcome != "succeeded":
        mark_error(current, error)


# -- logs ------------------------------------------------------------------------------------------


def add_trace_ids(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the recording span a log line is written in."""
    current = trace.get_current_span()
    if current.is_recording():
        context = current.get_span_context()
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
