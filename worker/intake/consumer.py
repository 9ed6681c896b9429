"""Consumes commands from the shard queues, runs the handler, and settles each message.

Commands for one document are handled one at a time and in delivery order: the per-document lock is taken
before the first ``await``, and transient failures are retried here, with backoff, while the lock is held,
so a later command for the same document can never overtake an earlier one that is still being retried.

A message is acked only after its outcome is durable: the result event confirmed by the broker, or the
dead-letter copy confirmed in the DLQ (followed by a failed event).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import uuid
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker import tracing
from worker.amqp.confirms import delivery_lost, publish_until_confirmed
from worker.amqp.copies import persistent_copy
from worker.amqp.names import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    FIRST_ATTEMPT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    WORKER_ONLY_HEADERS,
)
from worker.amqp.routing import tenant_of_routing_key
from worker.commands.handlers import Delivery
from worker.commands.parsing import command_from_json, decode_body, ids_from_json, max_body_bytes
from worker.contracts import CloudEvent, Command, DeleteCommand, DeleteSucceededData, UploadSucceededData
from worker.errors import InternalError, InvalidCommand, WorkerError
from worker.intake.document_locks import DocumentLocks
from worker.intake.envelope import check_envelope
from worker.intake.fair_gate import FairGate
from worker.results import policy
from worker.results.events import failed_event, success_event
from worker.runtime.metrics import WorkerMetrics
from worker.settings import Settings

log = structlog.get_logger(__name__)

Result = UploadSucceededData | DeleteSucceededData


class CommandHandlers(Protocol):
    async def handle_upload(self, command: Any, delivery: Delivery) -> UploadSucceededData: ...

    async def handle_delete(self, command: Any, delivery: Delivery) -> DeleteSucceededData: ...


class EventPublisher(Protocol):
    async def publish(self, event: CloudEvent[Any]) -> None: ...


class CommandConsumer:
    def __init__(
        self,
        settings: Settings,
        channel: AbstractChannel,
        handlers: CommandHandlers,
        publisher: EventPublisher,
        gate: FairGate,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._handlers = handlers
        self._publisher = publisher
        self._metrics = metrics or WorkerMetrics()
        self._locks = DocumentLocks()
        self._gate = gate
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._max_body = max_body_bytes(settings.max_file_size)

    async def on_message(self, message: AbstractIncomingMessage, shard: int | None = None) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        tracked = self._metrics.command_started(tenant_of_routing_key(message.routing_key or ""))
        try:
            await self._process(message, shard)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the message back unfinished (it was not acked).
            await self._requeue(message)
            raise
        finally:
            self._metrics.command_finished(tracked)
            if task is not None:
                self.in_flight.discard(task)

    def _read(self, message: AbstractIncomingMessage) -> tuple[Command | None, dict[str, Any], WorkerError | None]:
        """The command, whatever ids could be read, or the reason it cannot run. Never raises: no input,
        however hostile, may leave a message unsettled."""
        raw: Any = None
        try:
            raw = decode_body(message.body, self._max_body)  # parsed once: bodies can be 14 MB of base64
            command = command_from_json(raw)
            check_envelope(
                command, message.exchange, message.routing_key, message.type, self._settings.command_exchange
            )
            return command, ids_from_json(raw), None
        except WorkerError as exc:
            return None, ids_from_json(raw), exc
        except Exception as exc:  # a parser bug must not stall the queue: the command fails, clearly
            log.exception("command_unreadable")
            return None, {}, InvalidCommand(f"command could not be read ({type(exc).__name__})")

    async def _process(self, message: AbstractIncomingMessage, shard: int | None) -> None:
        command, ids, error = self._read(message)
        # The CloudEvent id is the command id; the AMQP message id is the producer's business.
        command_id = (
            command.id
            if command
            else ids.get("command_id") or message.message_id or f"unidentified-{message.delivery_tag}"
        )
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            command_id=command_id,
            tenant_id=str(ids.get("tenant_id", "")) or None,
            document_id=str(ids.get("document_id", "")) or None,
        )
        document_key: uuid.UUID | None = command.data.document_id if command else None
        command_type = ids.get("command_type", "unknown")
        with tracing.command_span(command, message.headers, ids, command_id, shard) as span:
            # Taken before any await: same-document commands queue up here in delivery order.
            async with self._locks.hold(document_key):
                if delivery_lost(message):  # its channel died while it waited: the broker has requeued it
                    log.info("delivery_lost_before_start")
                    return
                waited = self._metrics.observe_queue_wait(
                    command_type, command.time if command else None, message.timestamp
                )
                structlog.contextvars.bind_contextvars(queue_wait_s=round(waited, 3) if waited is not None else None)
                decision, result, error, attempt = await self._attempt_until_settled(message, command, shard, error)
                tracing.record_outcome(span, decision.outcome.value, result, error, attempt)
                try:
                    await self._settle(message, decision, result, error, command_id, ids, attempt)
                except Exception as exc:
                    # Broker trouble while settling: leave the message unacked; it is redelivered.
                    log.warning("settle_failed", error=repr(exc), outcome=decision.outcome.value)
                    await asyncio.sleep(1.0)  # no hot loop while the broker cannot take our events
                    await self._requeue(message)
                    return
        self._record(command_type, decision, error, result, command)

    async def _attempt_until_settled(
        self,
        message: AbstractIncomingMessage,
        command: Command | None,
        shard: int | None,
        parse_error: WorkerError | None,
    ) -> tuple[policy.Decision, Result | None, WorkerError | None, int]:
        # Attempts count from 1 on every delivery: a producer's x-attempt header is not believed, and the
        # queue's delivery limit catches a command that keeps crashing its replica.
        attempt = 1
        while True:
            structlog.contextvars.bind_contextvars(attempt=attempt)
            result: Result | None = None
            error = parse_error
            if command is not None:
                delivery = Delivery(
                    command.id,
                    attempt,
                    bool(message.redelivered),
                    command.source,
                    shard,
                    dms_turn=functools.partial(self._gate.slot, str(command.data.tenant_id)),  # not the fetch
                )
                with tracing.span("attempt", attributes={tracing.ATTEMPT: attempt}) as attempt_span:
                    try:
                        if isinstance(command, DeleteCommand):
                            result = await self._handlers.handle_delete(command, delivery)
                        else:
                            result = await self._handlers.handle_upload(command, delivery)
                    except WorkerError as exc:
                        error = exc
                    except Exception as exc:  # a bug: retried like a transient fault, so it ends in the DLQ
                        log.exception("unexpected_error")
                        error = InternalError(f"internal error: {type(exc).__name__}")
                    tracing.mark_error(attempt_span, error)
            decision = policy.decide(error, attempt, self._settings.retry_delays_ms)
            if decision.outcome is not policy.Outcome.RETRY:
                return decision, result, error, attempt
            assert error is not None and decision.delay_ms is not None
            log.info("command_retry_scheduled", error_code=error.code, error=error.message, delay_ms=decision.delay_ms)
            self._metrics.retries.labels(error_code=error.code).inc()
            await asyncio.sleep(decision.delay_ms / 1000)
            attempt += 1

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        decision: policy.Decision,
        result: Result | None,
        error: WorkerError | None,
        command_id: str,
        ids: dict[str, Any],
        attempt: int,
    ) -> None:
        source = self._settings.event_source
        outcome = decision.outcome
        if outcome is policy.Outcome.SUCCEEDED:
            assert result is not None
            await self._publisher.publish(success_event(source, result))
        elif outcome is policy.Outcome.FAILED:
            assert error is not None
            log.warning("command_failed", error_code=error.code, error=error.message)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt))
        else:
            assert error is not None
            log.error("command_dead_lettered", error_code=error.code, error=error.message)
            with tracing.span("dead-letter", tracing.SpanKind.PRODUCER, {tracing.ERROR_CODE: error.code}):
                await self._dead_letter(message, attempt, error)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt, dead_lettered=True))
        await message.ack()

    async def _dead_letter(self, message: AbstractIncomingMessage, attempt: int, error: WorkerError) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        headers = {k: v for k, v in (message.headers or {}).items() if k not in WORKER_ONLY_HEADERS}
        headers.update(
            {
                ORIGINAL_EXCHANGE_HEADER: message.exchange or "",
                ORIGINAL_ROUTING_KEY_HEADER: message.routing_key or "",
                FIRST_ATTEMPT_HEADER: now,
                ATTEMPT_HEADER: attempt,
                ERROR_CODE_HEADER: error.code,
                ERROR_MESSAGE_HEADER: error.message[:1000],
                DEAD_LETTERED_AT_HEADER: now,
            }
        )
        copy = persistent_copy(message, headers)
        exchange = self._channel.default_exchange
        await publish_until_confirmed(  # resent if a lost connection took the confirm, while the delivery lives
            lambda: exchange.publish(copy, routing_key=self._settings.dead_letter_queue, mandatory=True),
            what="dead-letter copy",
            still_wanted=lambda: not delivery_lost(message),
            channel=self._channel,
        )

    def _record(
        self,
        command_type: str,
        decision: policy.Decision,
        error: WorkerError | None,
        result: Result | None,
        command: Command | None,
    ) -> None:
        m = self._metrics
        m.commands.labels(type=command_type, outcome=decision.outcome.value).inc()
        if decision.outcome is policy.Outcome.DEAD_LETTER and error is not None:
            m.dead_letters.labels(error_code=error.code).inc()
        if isinstance(result, UploadSucceededData):
            m.bytes_uploaded.inc(result.size)
        if command is not None and command.time is not None:
            issued = command.time if command.time.tzinfo else command.time.replace(tzinfo=dt.UTC)
            m.end_to_end.labels(type=command_type).observe(max(0.0, (dt.datetime.now(dt.UTC) - issued).total_seconds()))

    @staticmethod
    async def _requeue(message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except Exception as exc:  # channel gone: the broker requeues unacked messages by itself
            log.info("requeue_skipped_channel_closed", error=repr(exc))
