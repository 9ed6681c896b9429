"""Builds result events and publishes them: outcomes with publisher confirms, retry notices best effort."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange

from worker import tracing
from worker.contracts import (
    CLOUDEVENTS_CONTENT_TYPE,
    DELETE,
    DELETE_FAILED,
    DELETE_RETRYING,
    UPLOAD_FAILED,
    UPLOAD_RETRYING,
    CloudEvent,
    CommandFailed,
    CommandRetrying,
    DeleteSucceeded,
    DeleteSucceededData,
    ErrorInfo,
    FailedData,
    RetryingData,
    UploadSucceeded,
    UploadSucceededData,
    routing_key,
)
from worker.errors import WorkerError

log = structlog.get_logger(__name__)


def success_event(source: str, data: UploadSucceededData | DeleteSucceededData) -> CloudEvent[Any]:
    common: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "source": source,
        "time": dt.datetime.now(dt.UTC),
        "subject": str(data.document_id),
    }
    if isinstance(data, UploadSucceededData):
        return UploadSucceeded(data=data, **common)
    return DeleteSucceeded(data=data, **common)


def _about_command(source: str, ids: dict[str, Any], upload_type: str, delete_type: str) -> dict[str, Any]:
    """The envelope of an event about a command: its type by the command's kind, its document as subject."""
    document_id = ids.get("document_id")
    return {
        "id": str(uuid.uuid4()),
        "source": source,
        "type": delete_type if ids.get("command_type") == DELETE else upload_type,
        "time": dt.datetime.now(dt.UTC),
        "subject": str(document_id) if document_id else None,
    }


def _command_ids(command_id: str, ids: dict[str, Any]) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "command_type": ids.get("command_type"),
        "tenant_id": ids.get("tenant_id"),
        "document_id": ids.get("document_id"),
    }


def failed_event(
    source: str,
    command_id: str,
    ids: dict[str, Any],
    error: WorkerError,
    attempts: int,
    dead_lettered: bool = False,
) -> CommandFailed:
    return CommandFailed(
        **_about_command(source, ids, UPLOAD_FAILED, DELETE_FAILED),
        data=FailedData(
            **_command_ids(command_id, ids),
            error=ErrorInfo(code=error.code, message=error.message),
            retried=attempts > 1,
            dead_lettered=dead_lettered,
            attempts=attempts,
        ),
    )


def retrying_event(
    source: str, command_id: str, ids: dict[str, Any], error: WorkerError, attempt: int, delay_ms: int
) -> CommandRetrying:
    return CommandRetrying(
        **_about_command(source, ids, UPLOAD_RETRYING, DELETE_RETRYING),
        data=RetryingData(
            **_command_ids(command_id, ids),
            error=ErrorInfo(code=error.code, message=error.message),
            attempt=attempt,
            next_attempt_in_ms=delay_ms,
        ),
    )


def to_message(event: CloudEvent[Any], headers: dict[str, Any] | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        body=event.model_dump_json(exclude_none=True).encode(),
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        message_id=event.id,
        type=event.type,
        timestamp=event.time,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers or {},
    )


class ResultPublisher:
    def __init__(self, exchange: AbstractExchange) -> None:
        self._exchange = exchange

    async def notify(self, event: CloudEvent[Any], timeout_s: float = 2.0) -> None:
        """Best effort, for progress notices: not mandatory (nobody may listen), at most ``timeout_s``, and a
        failure is logged, not raised."""
        try:
            async with asyncio.timeout(timeout_s):
                message, key = to_message(event, tracing.stamp(event)), routing_key(event.type)
                await self._exchange.publish(message, routing_key=key, mandatory=False)  # nobody may bind it
        except Exception as exc:  # a notice must never hold up or fail the command
            log.info("notice_not_published", type=event.type, error=repr(exc))

    async def publish(self, event: CloudEvent[Any]) -> None:
        """Returns once the broker confirmed the event (raises if it was refused or unroutable). The event
        carries the trace context of its publish span, a child of the command's span."""
        key = routing_key(event.type)
        with tracing.span(f"publish {event.type}", tracing.SpanKind.PRODUCER, {"messaging.message.id": event.id}):
            headers = tracing.stamp(event)
            await self._exchange.publish(to_message(event, headers), routing_key=key, mandatory=True)
