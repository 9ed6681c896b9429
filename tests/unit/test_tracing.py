"""Trace context in and out of commands and result events, error codes on spans, trace ids on log lines."""

from __future__ import annotations

import contextlib
import json
import uuid

import structlog
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, StatusCode

from tests.spans import captured_spans, in_trace
from worker import tracing
from worker.errors import DmsUnavailable
from worker.producer import delete_command
from worker.runtime import logs

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"


def command(traceparent: str | None = None):
    made = delete_command(uuid.uuid4(), uuid.uuid4())
    made.traceparent = traceparent
    return made


def trace_id(context) -> int:
    return trace.get_current_span(context).get_span_context().trace_id


class TestIncomingContext:
    """The CloudEvent attribute first, then the AMQP header; nothing invalid is believed."""

    def test_the_cloudevent_attribute_wins_over_the_header(self) -> None:
        context = tracing.incoming_context(command(PARENT), {"traceparent": OTHER})
        assert context is not None and trace_id(context) == 0x0AF7651916CD43DD8448EB211C80319C

    def test_the_header_serves_when_the_event_has_none_and_may_be_bytes(self) -> None:
        context = tracing.incoming_context(command(), {"traceparent": OTHER.encode()})
        assert context is not None and trace_id(context) == 0x11111111111111111111111111111111

    def test_no_or_invalid_context_is_none(self) -> None:
        assert tracing.incoming_context(command(), {}) is None
        assert tracing.incoming_context(None, None) is None
        assert tracing.incoming_context(command("not-a-traceparent"), {"traceparent": "00-zz"}) is None
        assert tracing.incoming_context(command("00-" + "0" * 32 + "-" + "0" * 16 + "-01"), None) is None


def test_stamp_writes_the_current_context_into_the_event_and_returns_it_as_headers() -> None:
    event = command()
    incoming = tracing.incoming_context(command(PARENT), None)
    assert incoming is not None
    with trace.use_span(NonRecordingSpan(trace.get_current_span(incoming).get_span_context())):
        headers = tracing.stamp(event)  # even without the SDK the incoming context is carried on
    assert event.traceparent == PARENT and headers == {"traceparent": PARENT}
    assert json.loads(event.model_dump_json(exclude_none=True))["traceparent"] == PARENT


def test_outside_any_span_nothing_is_stamped() -> None:
    event = command()
    assert tracing.stamp(event) == {} and event.traceparent is None


def test_a_worker_error_leaves_its_code_on_the_span() -> None:
    with captured_spans() as exporter:
        with contextlib.suppress(DmsUnavailable), tracing.span("DMS createDocument"):
            raise DmsUnavailable("DMS createDocument answered 503")
        (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes[tracing.ERROR_CODE] == "dms_unavailable"
    assert span.status.status_code is StatusCode.ERROR and not span.events  # no exception text recorded


def test_attributes_leave_out_none_and_keep_zero() -> None:
    assert tracing.attributes(tenant_id=None, shard=0, document_id="") == {tracing.SHARD: 0}


def test_log_lines_in_a_recording_span_carry_its_trace_and_span_ids(capsys) -> None:
    logs.configure("INFO", json_output=True)
    log = structlog.get_logger("t")
    with captured_spans() as exporter:
        with tracing.span("process dms.delete") as current:
            log.info("inside")
        log.info("outside")
        assert in_trace(exporter.get_finished_spans(), current.get_span_context().trace_id)
    structlog.reset_defaults()
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.strip().splitlines()[-2:])
    context = current.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside


def test_an_unreadable_command_gets_a_span_name_from_no_input() -> None:
    ids = {"command_type": "dms.upload<script>" * 5, "tenant_id": uuid.uuid4()}
    with captured_spans() as exporter:
        with tracing.command_span(None, {"traceparent": PARENT}, ids, "unidentified-7", None):
            pass
        (span,) = exporter.get_finished_spans()
    assert span.name == "process unknown"
    assert span.context is not None and span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # from the header
    assert span.attributes is not None and span.attributes[tracing.COMMAND_ID] == "unidentified-7"
