"""Captures finished spans in memory: the process's OpenTelemetry SDK, installed once for the test session
(OpenTelemetry allows one tracer provider per process), keeps spans only while a test captures them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _WhileCapturing(SimpleSpanProcessor):
    """Other tests' spans are dropped, not kept for the rest of the session."""

    capturing = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.capturing:
            super().on_end(span)


_exporter = InMemorySpanExporter()
_processor: _WhileCapturing | None = None


@contextlib.contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """The spans that finish inside the block (the SDK is installed on first use)."""
    global _processor
    if _processor is None:
        _processor = _WhileCapturing(_exporter)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(_processor)
    _exporter.clear()
    _processor.capturing = True
    try:
        yield _exporter
    finally:
        _processor.capturing = False
        _exporter.clear()


def trace_id_of(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


def in_trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
