"""Consumes commands, runs the handler, and settles each message from the retry policy's decision.

A message is acked only after its outcome is durable: the result event confirmed by the broker, the
retry copy confirmed in a delay queue, or the dead-letter copy confirmed in the DLQ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker import retry_policy
from worker.command_parsing import best_effort_ids, parse_command
from worker.contracts import CloudEvent, DeleteCommand, DeleteSucceededData, UploadSucceededData
from worker.errors import InternalError, WorkerError
from worker.handlers import Delivery
from worker.metrics import WorkerMetrics
from worker.results import failed_event, success_event
from worker.settings import Settings
from worker.topology import retry_queue_name

log = structlog.get_logger(__name__)

ATTEMPT_HEADER = "x-attempt"
FIRST_ATTEMPT_HEADER = "x-first-attempt-at"


class CommandHandlers(Protocol):
    async def handle_upload(self, command: Any, delivery: Delivery) -> UploadSucceededData: ...

    async def handle_delete(self, command: Any, delivery: Delivery) -> DeleteSucceededData: ...


class EventPublisher(Protocol):
    async def publish(self, event: CloudEvent[Any]) -> None: ...


def attempt_of(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    try:
        return max(1, int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1


class CommandConsumer:
    def __init__(
        self,
        settings: Settings,
        channel: AbstractChannel,
        handlers: CommandHandlers,
        publisher: EventPublisher,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._handlers = handlers
        self._publisher = publisher
        self._metrics = metrics or WorkerMetrics()
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        self._metrics.in_flight.inc()
        try:
            await self._process(message)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the message back unfinished (it was not acked).
            await self._requeue(message)
            raise
        finally:
            self._metrics.in_flight.dec()
            if task is not None:
                self.in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        attempt = attempt_of(message)
        command_id = message.message_id or f"unidentified-{message.delivery_tag}"
        ids = best_effort_ids(message.body)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            command_id=command_id,
            attempt=attempt,
            tenant_id=str(ids.get("tenant_id", "")) or None,
            document_id=str(ids.get("document_id", "")) or None,
        )
        delivery = Delivery(command_id=command_id, attempt=attempt, redelivered=bool(message.redelivered))
        error: WorkerError | None = None
        result: UploadSucceededData | DeleteSucceededData | None = None
        issued_at: dt.datetime | None = None
        try:
            command = parse_command(message.body)
            issued_at = command.time
            command_id = command.id if message.message_id is None else command_id
            delivery = Delivery(command_id=command_id, attempt=attempt, redelivered=delivery.redelivered)
            if isinstance(command, DeleteCommand):
                result = await self._handlers.handle_delete(command, delivery)
            else:
                result = await self._handlers.handle_upload(command, delivery)
        except WorkerError as exc:
            error = exc
        except Exception as exc:  # a bug: retry like a transient fault, so it ends in the DLQ, not lost
            log.exception("unexpected_error")
            error = InternalError(f"internal error: {type(exc).__name__}")

        decision = retry_policy.decide(error, attempt, self._settings.retry_delays_ms)
        try:
            await self._settle(message, decision, result, error, command_id, ids, attempt)
        except Exception as exc:
            # Broker trouble while settling: leave the message unacked; it is redelivered.
            log.warning("settle_failed", error=repr(exc), outcome=decision.outcome.value)
            await asyncio.sleep(1.0)  # no hot loop while the broker cannot take our events
            await self._requeue(message)
            return
        self._record(ids.get("command_type", "unknown"), decision, error, result, issued_at)

    def _record(
        self,
        command_type: str,
        decision: retry_policy.Decision,
        error: WorkerError | None,
        result: UploadSucceededData | DeleteSucceededData | None,
        issued_at: dt.datetime | None,
    ) -> None:
        m = self._metrics
        m.commands.labels(type=command_type, outcome=decision.outcome.value).inc()
        if decision.outcome is retry_policy.Outcome.RETRY and error is not None:
            m.retries.labels(error_code=error.code).inc()
        elif decision.outcome is retry_policy.Outcome.DEAD_LETTER and error is not None:
            m.dead_letters.labels(error_code=error.code).inc()
        if isinstance(result, UploadSucceededData):
            m.bytes_uploaded.inc(result.size)
        if issued_at is not None and decision.outcome is not retry_policy.Outcome.RETRY:
            aware = issued_at if issued_at.tzinfo else issued_at.replace(tzinfo=dt.UTC)
            m.end_to_end.labels(type=command_type).observe(max(0.0, (dt.datetime.now(dt.UTC) - aware).total_seconds()))

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        decision: retry_policy.Decision,
        result: UploadSucceededData | DeleteSucceededData | None,
        error: WorkerError | None,
        command_id: str,
        ids: dict[str, Any],
        attempt: int,
    ) -> None:
        source = self._settings.event_source
        outcome = decision.outcome
        if outcome is retry_policy.Outcome.SUCCEEDED:
            assert result is not None
            await self._publisher.publish(success_event(source, result))
        elif outcome is retry_policy.Outcome.FAILED:
            assert error is not None
            log.warning("command_failed", error_code=error.code, error=error.message)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt))
        elif outcome is retry_policy.Outcome.RETRY:
            assert error is not None and decision.delay_ms is not None
            log.info("command_retry_scheduled", error_code=error.code, error=error.message, delay_ms=decision.delay_ms)
            await self._republish(message, retry_queue_name(self._settings, decision.delay_ms), attempt + 1, {})
        else:
            assert error is not None
            log.error("command_dead_lettered", error_code=error.code, error=error.message)
            extra = {
                "x-error-code": error.code,
                "x-error-message": error.message[:1000],
                "x-dead-lettered-at": dt.datetime.now(dt.UTC).isoformat(),
            }
            await self._republish(message, self._settings.dead_letter_queue, attempt, extra)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt, dead_lettered=True))
        await message.ack()

    async def _republish(
        self, message: AbstractIncomingMessage, queue: str, attempt: int, extra_headers: dict[str, Any]
    ) -> None:
        headers = dict(message.headers or {})
        headers.setdefault(FIRST_ATTEMPT_HEADER, dt.datetime.now(dt.UTC).isoformat())
        headers[ATTEMPT_HEADER] = attempt
        headers["x-original-routing-key"] = message.routing_key or headers.get("x-original-routing-key", "")
        headers.update(extra_headers)
        copy = aio_pika.Message(
            body=message.body,
            content_type=message.content_type,
            message_id=message.message_id,
            type=message.type,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )
        await self._channel.default_exchange.publish(copy, routing_key=queue, mandatory=True)

    @staticmethod
    async def _requeue(message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # channel gone: the broker requeues unacked messages by itself
            log.info("requeue_skipped_channel_closed", error=repr(exc))
