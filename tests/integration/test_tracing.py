"""One trace from the published command through the worker's DMS calls to the result event: for a success,
a transient failure retried in place, and a command dead-lettered when its retries ran out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.spans import captured_spans, in_trace, trace_id_of
from worker import tracing
from worker.contracts import CommandFailed, UploadSucceeded
from worker.producer import upload_command

from .conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with captured_spans() as exporter:
        yield exporter


async def trace_of(exporter: InMemorySpanExporter, traceparent: str, until: str) -> list[ReadableSpan]:
    """The finished spans of one trace, once the span named ``until`` (which ends last) has finished."""
    for _ in range(100):
        found = in_trace(exporter.get_finished_spans(), trace_id_of(traceparent))
        if any(s.name == until for s in found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {until!r} span in trace {traceparent}: {sorted(s.name for s in found)}")


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def result_consumer_continues(event: dict[str, object]) -> int:
    """What a result consumer does: continue the trace the event carries; returns the trace id it is in."""
    model = CommandFailed if str(event["type"]).endswith(".failed") else UploadSucceeded
    parsed = model.model_validate(event)
    with tracing.span("consume result", SpanKind.CONSUMER, context=tracing.incoming_context(parsed, None)) as span:
        return span.get_span_context().trace_id


async def test_a_success_is_one_trace_from_publish_to_the_result_event(stack: Stack, spans) -> None:
    tenant, document = uuid.uuid4(), uuid.uuid4()
    command = upload_command(tenant, document, "a.txt", "text/plain", b"hello")
    event = await stack.run(command)
    assert command.traceparent is not None  # the producer helper started the trace and stamped the command
    assert event["type"] == "dms.upload.succeeded"
    assert trace_id_of(str(event["traceparent"])) == trace_id_of(command.traceparent)
    assert result_consumer_continues(event) == trace_id_of(command.traceparent)

    found = await trace_of(spans, command.traceparent, until="process dms.upload")
    publish, process = one(found, "publish dms.upload"), one(found, "process dms.upload")
    attempt, create = one(found, "attempt"), one(found, "DMS createDocument")
    lookup, token, result = (
        one(found, "repository lookup"),
        one(found, "token fetch"),
        one(found, "publish dms.upload.succeeded"),
    )
    assert publish.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert parent_of(process) == span_id(publish)
    assert parent_of(attempt) == span_id(process) and parent_of(result) == span_id(process)
    assert parent_of(lookup) == span_id(attempt) and parent_of(create) == span_id(attempt)
    assert parent_of(token) == span_id(lookup)  # the first DMS call (listRepositories) needed the token
    assert one(found, "DMS listRepositories").parent is not None
    assert str(event["traceparent"]).split("-")[2] == format(span_id(result), "016x")  # the result names its publish

    attributes = dict(process.attributes or {})
    assert attributes[tracing.TENANT] == str(tenant) and attributes[tracing.DOCUMENT] == str(document)
    assert attributes[tracing.COMMAND_ID] == command.id and attributes[tracing.VERSION_LABEL] == "1.0"
    assert attributes[tracing.OUTCOME] == "succeeded" and attributes[tracing.ATTEMPTS] == 1
    assert dict(create.attributes or {})["http.response.status_code"] == 201
    everything = repr([dict(s.attributes or {}) for s in found])
    assert "hello" not in everything and "aGVsbG8" not in everything  # no content, plain or base64
    assert "secret" not in everything.lower()


async def test_a_retried_transient_failure_shows_each_attempt_in_the_same_trace(stack: Stack, spans) -> None:
    await stack.set_faults(
        scripted=[{"kind": "status", "status": 503, "times": 1, "path_prefix": "/browser", "action": "createDocument"}]
    )
    command = upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x")
    event = await stack.run(command)
    assert event["type"] == "dms.upload.succeeded" and event["data"]["attempts"] == 2
    assert command.traceparent is not None
    assert trace_id_of(str(event["traceparent"])) == trace_id_of(command.traceparent)

    found = await trace_of(spans, command.traceparent, until="process dms.upload")
    process = one(found, "process dms.upload")
    attempts = sorted((s for s in found if s.name == "attempt"), key=lambda s: s.start_time or 0)
    assert [dict(s.attributes or {})[tracing.ATTEMPT] for s in attempts] == [1, 2]
    assert all(parent_of(s) == span_id(process) for s in attempts)
    assert dict(attempts[0].attributes or {})[tracing.ERROR_CODE] == "dms_unavailable"
    assert attempts[0].status.status_code is StatusCode.ERROR and attempts[1].status.status_code is not StatusCode.ERROR
    creates = [s for s in found if s.name == "DMS createDocument"]
    assert sorted(int(str(dict(s.attributes or {})["http.response.status_code"])) for s in creates) == [201, 503]
    assert {parent_of(s) for s in creates} == {span_id(a) for a in attempts}
    assert dict(process.attributes or {})[tracing.ATTEMPTS] == 2
    assert process.status.status_code is not StatusCode.ERROR


async def test_a_dead_lettered_command_is_one_trace_with_its_failed_event(stack: Stack, spans) -> None:
    await stack.set_faults(scripted=[{"kind": "status", "status": 502, "times": 99, "path_prefix": "/browser"}])
    command = upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"x")
    event = await stack.run(command)
    assert event["type"] == "dms.upload.failed" and event["data"]["dead_lettered"] is True
    assert command.traceparent is not None
    assert trace_id_of(str(event["traceparent"])) == trace_id_of(command.traceparent)
    assert result_consumer_continues(event) == trace_id_of(command.traceparent)

    found = await trace_of(spans, command.traceparent, until="process dms.upload")
    process = one(found, "process dms.upload")
    assert [s.name for s in found].count("attempt") == 3
    dead_letter = one(found, "dead-letter")
    assert parent_of(dead_letter) == span_id(process) and parent_of(one(found, "publish dms.upload.failed")) == span_id(
        process
    )
    attributes = dict(process.attributes or {})
    assert attributes[tracing.OUTCOME] == "dead_letter" and attributes[tracing.ERROR_CODE] == "dms_unavailable"
    assert process.status.status_code is StatusCode.ERROR
    (dead,) = await stack.dead_letters()  # the copy keeps the command's context: a replay joins the same trace
    assert dead.headers["traceparent"] == command.traceparent
