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
import uuid
from collections import Counter
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker import retry_policy
from worker.command_parsing import command_from_json, decode_body, ids_from_json
from worker.contracts import CloudEvent, Command, DeleteCommand, DeleteSucceededData, UploadSucceededData
from worker.document_locks import DocumentLocks
from worker.errors import InternalError, WorkerError
from worker.handlers import Delivery
from worker.metrics import WorkerMetrics
from worker.republishing import persistent_copy
from worker.results import failed_event, success_event
from worker.settings import Settings

log = structlog.get_logger(__name__)

ATTEMPT_HEADER = "x-attempt"
FIRST_ATTEMPT_HEADER = "x-first-attempt-at"
MAY_HAVE_RUN_HEADER = "x-may-have-run"  # set by the shard router when the ingress copy was a redelivery

Result = UploadSucceededData | DeleteSucceededData


class CommandHandlers(Protocol):
    async def handle_upload(self, command: Any, delivery: Delivery) -> UploadSucceededData: ...

    async def handle_delete(self, command: Any, delivery: Delivery) -> DeleteSucceededData: ...


class EventPublisher(Protocol):
    async def publish(self, event: CloudEvent[Any]) -> None: ...


def attempts_before(message: AbstractIncomingMessage) -> int:
    """Attempts already made on this command before this delivery (0 for a fresh one)."""
    value = (message.headers or {}).get(ATTEMPT_HEADER, 0)
    try:
        return max(0, int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


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
        self._locks = DocumentLocks()
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._in_flight_by_queue: Counter[str] = Counter()

    def in_flight_from(self, queue: str) -> int:
        """Messages from this queue not yet settled (shard handover waits for zero)."""
        return self._in_flight_by_queue[queue]

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        queue = message.routing_key or ""
        self._in_flight_by_queue[queue] += 1
        self._metrics.in_flight.inc()
        try:
            await self._process(message)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the message back unfinished (it was not acked).
            await self._requeue(message)
            raise
        finally:
            self._metrics.in_flight.dec()
            self._in_flight_by_queue[queue] -= 1
            if not self._in_flight_by_queue[queue]:
                del self._in_flight_by_queue[queue]
            if task is not None:
                self.in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        raw: Any = None
        command: Command | None = None
        error: WorkerError | None = None
        try:
            raw = decode_body(message.body)  # parsed once: bodies can be 14 MB of base64
            command = command_from_json(raw)
        except WorkerError as exc:
            error = exc
        ids = ids_from_json(raw)
        del raw
        command_id = message.message_id or f"unidentified-{message.delivery_tag}"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            command_id=command_id,
            tenant_id=str(ids.get("tenant_id", "")) or None,
            document_id=str(ids.get("document_id", "")) or None,
        )
        document_key: uuid.UUID | None = command.data.document_id if command else None
        # Taken before any await: same-document commands queue up here in delivery order.
        async with self._locks.hold(document_key):
            if command is not None and message.message_id is None:
                command_id = command.id
            decision, result, error, attempt = await self._attempt_until_settled(message, command, command_id, error)
            try:
                await self._settle(message, decision, result, error, command_id, ids, attempt)
            except Exception as exc:
                # Broker trouble while settling: leave the message unacked; it is redelivered.
                log.warning("settle_failed", error=repr(exc), outcome=decision.outcome.value)
                await asyncio.sleep(1.0)  # no hot loop while the broker cannot take our events
                await self._requeue(message)
                return
        self._record(ids.get("command_type", "unknown"), decision, error, result, command)

    async def _attempt_until_settled(
        self,
        message: AbstractIncomingMessage,
        command: Command | None,
        command_id: str,
        parse_error: WorkerError | None,
    ) -> tuple[retry_policy.Decision, Result | None, WorkerError | None, int]:
        attempt = attempts_before(message) + 1
        may_have_run = bool(message.redelivered) or bool((message.headers or {}).get(MAY_HAVE_RUN_HEADER))
        while True:
            structlog.contextvars.bind_contextvars(attempt=attempt)
            result: Result | None = None
            error = parse_error
            if command is not None:
                delivery = Delivery(command_id=command_id, attempt=attempt, redelivered=may_have_run)
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
            decision = retry_policy.decide(error, attempt, self._settings.retry_delays_ms)
            if decision.outcome is not retry_policy.Outcome.RETRY:
                return decision, result, error, attempt
            assert error is not None and decision.delay_ms is not None
            log.info("command_retry_scheduled", error_code=error.code, error=error.message, delay_ms=decision.delay_ms)
            self._metrics.retries.labels(error_code=error.code).inc()
            await asyncio.sleep(decision.delay_ms / 1000)
            attempt += 1

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        decision: retry_policy.Decision,
        result: Result | None,
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
        else:
            assert error is not None
            log.error("command_dead_lettered", error_code=error.code, error=error.message)
            await self._dead_letter(message, attempt, error)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt, dead_lettered=True))
        await message.ack()

    async def _dead_letter(self, message: AbstractIncomingMessage, attempt: int, error: WorkerError) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        headers = dict(message.headers or {})
        headers.pop(MAY_HAVE_RUN_HEADER, None)
        headers.setdefault(FIRST_ATTEMPT_HEADER, now)
        headers.update(
            {
                ATTEMPT_HEADER: attempt,
                "x-error-code": error.code,
                "x-error-message": error.message[:1000],
                "x-dead-lettered-at": now,
            }
        )
        await self._channel.default_exchange.publish(
            persistent_copy(message, headers), routing_key=self._settings.dead_letter_queue, mandatory=True
        )

    def _record(
        self,
        command_type: str,
        decision: retry_policy.Decision,
        error: WorkerError | None,
        result: Result | None,
        command: Command | None,
    ) -> None:
        m = self._metrics
        m.commands.labels(type=command_type, outcome=decision.outcome.value).inc()
        if decision.outcome is retry_policy.Outcome.DEAD_LETTER and error is not None:
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
