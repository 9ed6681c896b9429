"""Runs one delivered command: reads it, attempts it with retries, and settles the message.

When a command runs, and what waits for what, is the dispatcher's decision (``worker.intake.dispatcher``):
this module gets a command once its turn has come, and parks it there for each retry backoff, so a command
in backoff holds back its own document's later commands and nothing else.

A message is acked only after its outcome is durable: the result event confirmed by the broker, or the
dead-letter copy confirmed in the DLQ (followed by a failed event). It is never nacked: a command that
cannot be settled is left to the broker, which gets it back when its queue's channel closes
(``worker.intake.shard_consumers`` says why that keeps order and a nack would not).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker import backoff, tracing
from worker.amqp.acks import DelayedAcks
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
from worker.commands.delivery import Delivery, gate_dms_calls
from worker.commands.parsing import command_from_json, decode_body, ids_from_json, max_body_bytes, valid_command
from worker.contracts import (
    CloudEvent,
    Command,
    DeleteCommand,
    DeleteSucceededData,
    UploadCommand,
    UploadSucceededData,
)
from worker.errors import InternalError, InvalidCommand, TransientError, WorkerError
from worker.intake.dispatcher import Withdrawn
from worker.intake.envelope import check_envelope
from worker.intake.lease import BrokerLease
from worker.results import policy
from worker.results.events import failed_event, retrying_event, success_event
from worker.settings import ResultSettings, TopologySettings

log = structlog.get_logger(__name__)

FENCE_POLL_S = 0.25  # how often a fenced command looks whether the lease is back or its delivery gone

Result = UploadSucceededData | DeleteSucceededData
# Sleeps a retry backoff without holding a place (ended early when the event, if any, is set); may raise Withdrawn.
Park = Callable[[float, asyncio.Event | None], Awaitable[None]]


class CommandHandlers(Protocol):
    async def handle_upload(self, command: Any, delivery: Delivery) -> UploadSucceededData: ...

    async def handle_delete(self, command: Any, delivery: Delivery) -> DeleteSucceededData: ...


class CommandObserver(Protocol):
    """What the consumer reports while commands run (``worker.runtime.metrics.WorkerMetrics`` is one)."""

    def command_started(self, tenant: str | None) -> object: ...  # a key for command_finished

    def command_finished(self, key: object) -> None: ...

    def observe_queue_wait(
        self, command_type: str, issued: dt.datetime | None, amqp_timestamp: dt.datetime | None
    ) -> float | None: ...  # seconds waited before the first attempt, if known

    def retry_scheduled(self, error_code: str) -> None: ...

    def command_ended(
        self,
        command_type: str,
        outcome: policy.Outcome,
        error_code: str | None,
        uploaded_bytes: int | None,
        issued: dt.datetime | None,
    ) -> None: ...


class EventPublisher(Protocol):
    async def publish(self, event: CloudEvent[Any]) -> None: ...  # confirmed, or raises

    async def notify(self, event: CloudEvent[Any]) -> None: ...  # best effort, never raises


class Ending(Enum):
    SETTLED = "settled"  # acked, its outcome durable
    GIVE_BACK = "give_back"  # its outcome could not be made durable: the queue must be given back
    LOST = "lost"  # its channel died: the broker has it back already
    WITHDRAWN = "withdrawn"  # its queue is being given back: left unsettled


@dataclass(frozen=True)
class Attempts:
    """How a command's attempts on this delivery ended."""

    decision: policy.Decision
    result: Result | None
    error: WorkerError | None
    attempt: int  # the last one
    first_at: dt.datetime  # when the first began


@dataclass(frozen=True)
class Incoming:
    """A delivery as read once, when it arrives (bodies can be 14 MB of base64)."""

    message: AbstractIncomingMessage
    shard: int | None
    command: Command | None
    ids: dict[str, Any]
    error: WorkerError | None
    document: Hashable | None = None  # what orders it (None: too broken to name its document, waits for nobody)


class CommandConsumer:
    def __init__(
        self,
        topology: TopologySettings,  # the command exchange (an envelope's check) and the dead-letter queue
        results: ResultSettings,  # the retry schedule and the events' source
        max_file_size: int,  # bounds what a body may hold (base64 and JSON around the file)
        channel: AbstractChannel,
        handlers: CommandHandlers,
        publisher: EventPublisher,
        observer: CommandObserver,
        jitter: backoff.Jitter = backoff.jittered,
        settle_failure_pause_s: float = 1.0,  # no hot loop while the broker cannot take our events
        lease: BrokerLease | None = None,
        acks: DelayedAcks | None = None,  # None: each ack is sent at once
    ) -> None:
        self._topology = topology
        self._acks = acks
        self._results = results
        self._jitter = jitter
        self._settle_failure_pause_s = settle_failure_pause_s
        self._lease = lease  # None: no fence (tests of the consumer alone)
        self._fenced = False
        self._channel = channel
        self._handlers = handlers
        self._publisher = publisher
        self._observer = observer
        self._max_body = max_body_bytes(max_file_size)

    def read(self, message: AbstractIncomingMessage, shard: int | None = None) -> Incoming:
        """The command, whatever ids could be read, or the reason it cannot run. Never raises: no input,
        however hostile, may leave a message unsettled."""
        raw: Any = None
        ids: dict[str, Any] = {}
        try:
            if (valid := valid_command(message.body, self._max_body)) is not None:
                command, ids = valid
            else:  # read again step by step, for the reason and whatever ids it has
                raw = decode_body(message.body, self._max_body)
                command, ids = command_from_json(raw), ids_from_json(raw)
            check_envelope(
                command, message.exchange, message.routing_key, message.type, self._topology.command_exchange
            )
            return Incoming(message, shard, command, ids, None, command.data.document_id)
        except WorkerError as exc:
            return Incoming(message, shard, None, ids_from_json(raw) if raw is not None else ids, exc)
        except Exception as exc:  # a parser bug must not stall the queue: the command fails, clearly
            log.exception("command_unreadable")
            unreadable = InvalidCommand(f"command could not be read ({type(exc).__name__})")
            return Incoming(message, shard, None, {}, unreadable)

    async def run(self, incoming: Incoming, park: Park) -> Ending:
        """Runs the command to its outcome and settles it; see ``Ending`` for what the caller does next."""
        message, command, ids = incoming.message, incoming.command, incoming.ids
        tracked = self._observer.command_started(tenant_of_routing_key(message.routing_key or ""))
        try:
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
            command_type = ids.get("command_type", "unknown")
            with tracing.command_span(command, message.headers, ids, command_id, incoming.shard) as span:
                if delivery_lost(message):  # its channel died while it waited: the broker has it back
                    log.info("delivery_lost_before_start")
                    return Ending.LOST
                waited = self._observer.observe_queue_wait(
                    command_type, command.time if command else None, message.timestamp
                )
                structlog.contextvars.bind_contextvars(queue_wait_s=round(waited, 3) if waited is not None else None)
                gate_dms_calls(functools.partial(self._fence, message))  # this command's task only
                try:
                    done = await self._attempt_until_settled(incoming, park, command_id)
                except Withdrawn:
                    if delivery_lost(message):
                        log.info("delivery_lost_while_running")
                        return Ending.LOST
                    log.info("command_given_back")
                    return Ending.WITHDRAWN
                outcome = done.decision.outcome.value
                if delivery_lost(message):
                    log.info("delivery_lost_before_settle", outcome=outcome)
                    return Ending.LOST
                tracing.record_outcome(span, outcome, done.result, done.error, done.attempt)
                try:
                    await self._settle(incoming, done, command_id, ids)
                except Exception as exc:
                    if delivery_lost(message):
                        log.info("settle_lost_with_channel", error=repr(exc), outcome=outcome)
                        return Ending.LOST
                    # Broker trouble while settling: the message stays unacked and its queue is given back.
                    log.warning("settle_failed", error=repr(exc), outcome=outcome)
                    await asyncio.sleep(self._settle_failure_pause_s)
                    return Ending.GIVE_BACK
            self._record(command_type, done.decision, done.error, done.result, command)
            return Ending.SETTLED
        finally:
            self._observer.command_finished(tracked)

    async def _attempt_until_settled(self, incoming: Incoming, park: Park, command_id: str) -> Attempts:
        # Attempts count from 1 on every delivery: a producer's x-attempt header is not believed, and the
        # queue's delivery limit catches a command that keeps crashing its replica.
        message, command = incoming.message, incoming.command
        first_at = dt.datetime.now(dt.UTC)
        attempt = 1
        while True:
            structlog.contextvars.bind_contextvars(attempt=attempt)
            result: Result | None = None
            error = incoming.error
            if command is not None:
                delivery = Delivery(command.id, attempt, bool(message.redelivered), command.source, incoming.shard)
                with tracing.span("attempt", attributes={tracing.ATTEMPT: attempt}) as attempt_span:
                    try:
                        if isinstance(command, DeleteCommand):
                            result = await self._handlers.handle_delete(command, delivery)
                        else:
                            result = await self._handlers.handle_upload(command, delivery)
                    except WorkerError as exc:
                        error = exc
                    except Withdrawn:
                        raise
                    except Exception as exc:  # a bug: retried like a transient fault, so it ends in the DLQ
                        log.exception("unexpected_error")
                        error = InternalError(f"internal error: {type(exc).__name__}")
                    tracing.mark_error(attempt_span, error)
            decision = policy.decide(error, attempt, self._results.retry_delays_ms, self._jitter)
            # decide() gives RETRY only for an error, with a delay; anything else ends the attempts
            if decision.outcome is not policy.Outcome.RETRY or error is None or decision.delay_ms is None:
                return Attempts(decision, result, error, attempt, first_at)
            log.info("command_retry_scheduled", error_code=error.code, error=error.message, delay_ms=decision.delay_ms)
            self._observer.retry_scheduled(error.code)
            notice = retrying_event(
                self._results.event_source, command_id, incoming.ids, error, attempt, decision.delay_ms
            )
            await self._publisher.notify(notice)  # producers and publish --wait show "retrying, next in ..."
            await park(decision.delay_ms / 1000, error.retry_sooner if isinstance(error, TransientError) else None)
            if delivery_lost(message):  # no use trying again: the broker delivers it again, in order
                raise Withdrawn
            attempt += 1

    async def _fence(self, message: AbstractIncomingMessage) -> None:
        """Passed before every DMS call of a command: no call starts while this replica does not hear the broker
        (``worker.intake.lease``), and none once the command's delivery is back with the broker."""
        lease = self._lease
        if lease is not None and not lease.holds():
            if not self._fenced:
                self._fenced = True
                log.warning("broker_lease_lost_dms_calls_wait", silent_for_s=round(lease.silent_for_s(), 1))
            while not lease.holds() and not delivery_lost(message):  # noqa: ASYNC110 - two conditions, one aio-pika's
                await asyncio.sleep(FENCE_POLL_S)
            if self._fenced and lease.holds():
                self._fenced = False
                log.info("broker_lease_renewed")
        if delivery_lost(message):
            raise Withdrawn

    async def _settle(self, incoming: Incoming, done: Attempts, command_id: str, ids: dict[str, Any]) -> None:
        message, source = incoming.message, self._results.event_source
        outcome, result, error, attempt = done.decision.outcome, done.result, done.error, done.attempt
        if outcome is policy.Outcome.SUCCEEDED and result is not None:
            await self._publisher.publish(success_event(source, result))
        elif outcome is policy.Outcome.FAILED and error is not None:
            log.warning("command_failed", error_code=error.code, error=error.message)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt))
        elif outcome is policy.Outcome.DEAD_LETTER and error is not None:
            log.error("command_dead_lettered", error_code=error.code, error=error.message)
            with tracing.span("dead-letter", tracing.SpanKind.PRODUCER, {tracing.ERROR_CODE: error.code}):
                await self._dead_letter(message, attempt, error, done.first_at)
            await self._publisher.publish(failed_event(source, command_id, ids, error, attempt, dead_lettered=True))
        else:  # an outcome without its result or error (a bug): never acked, so the command is not lost
            raise InternalError(f"nothing to make durable for outcome {outcome.value}")
        if self._acks is None:
            await message.ack()
        elif outcome is policy.Outcome.SUCCEEDED and isinstance(incoming.command, UploadCommand):
            self._acks.later(message, incoming.document)  # runs again to the same version (worker.amqp.acks)
        else:
            await self._acks.now(message)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, attempt: int, error: WorkerError, first_at: dt.datetime
    ) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        headers = {k: v for k, v in (message.headers or {}).items() if k not in WORKER_ONLY_HEADERS}
        headers.update(
            {
                ORIGINAL_EXCHANGE_HEADER: message.exchange or "",
                ORIGINAL_ROUTING_KEY_HEADER: message.routing_key or "",
                FIRST_ATTEMPT_HEADER: first_at.isoformat(),  # this delivery's first attempt
                ATTEMPT_HEADER: attempt,
                ERROR_CODE_HEADER: error.code,
                ERROR_MESSAGE_HEADER: error.message[:1000],
                DEAD_LETTERED_AT_HEADER: now,
            }
        )
        copy = persistent_copy(message, headers)
        exchange = self._channel.default_exchange
        await publish_until_confirmed(  # resent if a lost connection took the confirm, while the delivery lives
            lambda: exchange.publish(copy, routing_key=self._topology.dead_letter_queue, mandatory=True),
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
        self._observer.command_ended(
            command_type,
            decision.outcome,
            error.code if error is not None else None,
            result.size if isinstance(result, UploadSucceededData) else None,
            command.time if command is not None else None,
        )
