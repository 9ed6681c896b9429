"""How the consumer settles a message, with fakes for the incoming message, the channel, the event publisher
and the handlers (no sockets): the outcome is made durable first, and only then is the message acked; a
message is never nacked (its queue is given back instead)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.amqp.names import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    FIRST_ATTEMPT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)
from worker.amqp.routing import command_destination
from worker.commands.delivery import Delivery
from worker.contracts import CloudEvent, DeleteSucceededData, UploadCommand, UploadSucceededData
from worker.errors import DmsUnavailable, FileTooLarge
from worker.intake.consumer import CommandConsumer, Ending
from worker.intake.dispatcher import Withdrawn
from worker.producer import upload_command
from worker.results.events import to_message
from worker.runtime.metrics import WorkerMetrics
from worker.settings import CommandSettings, ResultSettings, TopologySettings

Journal = list[tuple[Any, ...]]


@dataclass
class FakeMessage:
    """The parts of aio-pika's ``AbstractIncomingMessage`` the consumer uses; settling goes to the journal."""

    journal: Journal
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    redelivered: bool = False
    exchange: str = ""
    routing_key: str = ""
    delivery_tag: int = 1
    content_type: str | None = "application/cloudevents+json"
    content_encoding: str | None = None
    correlation_id: str | None = None
    type: str | None = "dms.upload"
    timestamp: dt.datetime | None = None
    app_id: str | None = None

    async def ack(self) -> None:
        self.journal.append(("ack",))

    async def nack(self, requeue: bool = True) -> None:
        self.journal.append(("nack", requeue))


@dataclass
class FakeExchange:
    journal: Journal

    async def publish(self, message: Any, routing_key: str, mandatory: bool = False) -> None:
        self.journal.append(("dead_letter", routing_key, dict(message.headers)))


@dataclass
class FakeChannel:
    default_exchange: FakeExchange


@dataclass
class FakePublisher:
    """Stands in for ``ResultPublisher``: returning means the broker confirmed the event."""

    journal: Journal
    fail_with: Exception | None = None
    events: list[CloudEvent[Any]] = field(default_factory=list)

    async def publish(self, event: CloudEvent[Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.events.append(event)
        self.journal.append(("event", event.type))

    async def notify(self, event: CloudEvent[Any]) -> None:
        self.journal.append(("notice", event.type, event.data.attempt, event.data.next_attempt_in_ms))


class FakeHandlers:
    """Runs ``behaviour(attempt)`` for each upload: it returns nothing (success) or raises."""

    def __init__(self, behaviour: Callable[[int], Any]) -> None:
        self.behaviour = behaviour
        self.deliveries: list[Delivery] = []

    async def handle_upload(self, command: UploadCommand, delivery: Delivery) -> UploadSucceededData:
        self.deliveries.append(delivery)
        outcome = self.behaviour(delivery.attempt)
        if asyncio.iscoroutine(outcome):
            await outcome
        data = command.data
        return UploadSucceededData(
            command_id=delivery.command_id,
            tenant_id=data.tenant_id,
            document_id=data.document_id,
            repository_id="repo",
            object_id="object",
            version_label="1.0",
            version_series_id="series",
            file_name=data.file_name,
            size=3,
            sha256="0" * 64,
            mime_type=data.mime_type,
            attempts=delivery.attempt,
        )

    async def handle_delete(self, command: Any, delivery: Delivery) -> DeleteSucceededData:
        raise AssertionError("these tests send uploads only")


def succeed(_attempt: int) -> None:
    return None


def fail_with(error: Exception) -> Callable[[int], None]:
    def behaviour(_attempt: int) -> None:
        raise error

    return behaviour


@dataclass
class Rig:
    journal: Journal
    command: UploadCommand
    message: FakeMessage
    handlers: FakeHandlers
    publisher: FakePublisher
    consumer: CommandConsumer
    topology: TopologySettings


class FakeAcks:
    """``worker.amqp.acks.DelayedAcks`` as the consumer sees it: which way each ack goes, in the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def later(self, message: Any, document: Any) -> None:
        self.journal.append(("ack later",))

    async def now(self, message: Any) -> None:
        self.journal.append(("ack now",))


def rig(
    behaviour: Callable[[int], Any],
    publish_fails: Exception | None = None,
    headers: dict[str, Any] | None = None,
    batched_acks: bool = False,
) -> Rig:
    journal: Journal = []
    topology = TopologySettings()
    command = upload_command(uuid.uuid4(), uuid.uuid4(), "a.txt", "text/plain", b"abc")
    amqp = to_message(command, headers=headers)
    message = FakeMessage(journal, amqp.body, dict(amqp.headers or {}), command.id)
    message.exchange, message.routing_key = command_destination(
        topology.command_exchange, command.type, command.data.tenant_id, command.data.document_id
    )
    handlers = FakeHandlers(behaviour)
    publisher = FakePublisher(journal, fail_with=publish_fails)
    channel = FakeChannel(FakeExchange(journal))
    # Without jitter: the configured delays themselves (tests/unit/results/test_policy.py covers the jitter).
    consumer = CommandConsumer(
        topology,
        ResultSettings(retry_delays_ms=[1, 1]),
        CommandSettings().max_file_size,
        channel,  # type: ignore[arg-type]
        handlers,
        publisher,
        WorkerMetrics(),
        jitter=lambda delay_s: delay_s,
        settle_failure_pause_s=0.01,
        acks=FakeAcks(journal) if batched_acks else None,  # type: ignore[arg-type]
    )
    return Rig(journal, command, message, handlers, publisher, consumer, topology)


async def settle(r: Rig, parked: list[float] | None = None) -> Ending:
    async def park(delay_s: float, sooner: asyncio.Event | None) -> None:  # the dispatcher's, without it
        if parked is not None:
            parked.append(delay_s)
        await asyncio.sleep(delay_s)

    return await r.consumer.run(r.consumer.read(r.message), park)  # type: ignore[arg-type]


class TestBatchedAcks:
    """Only a succeeded upload's ack may wait (it runs again to the same version); any other outcome's goes now."""

    async def test_a_succeeded_upload_is_acked_later(self) -> None:
        r = rig(succeed, batched_acks=True)
        assert await settle(r) is Ending.SETTLED
        assert r.journal == [("event", "dms.upload.succeeded"), ("ack later",)]

    async def test_a_failed_command_is_acked_now(self) -> None:
        r = rig(fail_with(FileTooLarge("too big")), batched_acks=True)
        await settle(r)
        assert r.journal == [("event", "dms.upload.failed"), ("ack now",)]

    async def test_a_dead_lettered_command_is_acked_now(self) -> None:
        r = rig(fail_with(DmsUnavailable("503")), batched_acks=True)
        await settle(r)
        assert r.journal[-1] == ("ack now",)


class TestSettle:
    """Each outcome is durable (event confirmed, or DLQ copy and event) before the ack; otherwise no ack."""

    async def test_success_publishes_the_event_then_acks(self) -> None:
        r = rig(succeed)
        assert await settle(r) is Ending.SETTLED
        assert r.journal == [("event", "dms.upload.succeeded"), ("ack",)]
        assert [d.attempt for d in r.handlers.deliveries] == [1]

    async def test_a_permanent_failure_publishes_a_failed_event_then_acks_without_retrying(self) -> None:
        r = rig(fail_with(FileTooLarge("too big")))
        await settle(r)
        assert r.journal == [("event", "dms.upload.failed"), ("ack",)]
        (event,) = r.publisher.events
        assert event.data.error.code == "file_too_large"
        assert (event.data.retried, event.data.dead_lettered, event.data.attempts) == (False, False, 1)
        assert len(r.handlers.deliveries) == 1

    async def test_a_transient_failure_with_attempts_left_is_parked_then_retried(self) -> None:
        def flaky(attempt: int) -> None:
            if attempt == 1:
                raise DmsUnavailable("503")

        r = rig(flaky)
        parked: list[float] = []
        await settle(r, parked)
        assert parked == [0.001]  # the first retry delay, slept in the dispatcher's park
        # the notice says which attempt failed and when the next comes, before the backoff
        assert r.journal == [("notice", "dms.upload.retrying", 1, 1), ("event", "dms.upload.succeeded"), ("ack",)]
        assert [d.attempt for d in r.handlers.deliveries] == [1, 2]
        assert r.handlers.deliveries[1].may_have_written
        assert r.publisher.events[0].data.attempts == 2

    async def test_used_up_attempts_put_a_copy_in_the_dlq_then_publish_a_dead_lettered_event_then_ack(self) -> None:
        # A producer's own x-attempt is not believed: it neither shortens the retries nor reaches the DLQ.
        r = rig(fail_with(DmsUnavailable("503 from DMS")), headers={ATTEMPT_HEADER: 999, "x-custom": "kept"})
        await settle(r)
        assert [entry[0] for entry in r.journal] == ["notice", "notice", "dead_letter", "event", "ack"]
        _, queue, headers = r.journal[2]
        assert queue == r.topology.dead_letter_queue
        assert headers[ATTEMPT_HEADER] == 3 and headers[ERROR_CODE_HEADER] == "dms_unavailable"
        assert headers[ERROR_MESSAGE_HEADER] == "503 from DMS"
        assert headers["x-custom"] == "kept"
        assert (headers[ORIGINAL_EXCHANGE_HEADER], headers[ORIGINAL_ROUTING_KEY_HEADER]) == (
            r.message.exchange,
            r.message.routing_key,
        )
        first, last = (dt.datetime.fromisoformat(headers[h]) for h in (FIRST_ATTEMPT_HEADER, DEAD_LETTERED_AT_HEADER))
        assert last - first >= dt.timedelta(milliseconds=2)  # the first attempt began before two 1 ms backoffs
        (event,) = r.publisher.events
        assert (event.data.dead_lettered, event.data.retried, event.data.attempts) == (True, True, 3)
        assert [d.attempt for d in r.handlers.deliveries] == [1, 2, 3]

    async def test_a_body_that_is_no_command_fails_permanently_and_is_acked(self) -> None:
        r = rig(succeed)
        r.message.body = b"not json"
        await settle(r)
        assert r.journal == [("event", "dms.upload.failed"), ("ack",)]
        assert r.publisher.events[0].data.error.code == "invalid_command"
        assert r.handlers.deliveries == []

    @pytest.mark.parametrize(
        ("field", "value", "says"),
        [
            ("exchange", "dms.commands.delete", "must come through exchange dms.commands.upload"),
            ("routing_key", "upload", "routing key 'upload' does not match"),
            ("type", "dms.delete", "AMQP type 'dms.delete' disagrees"),
        ],
    )
    async def test_an_envelope_that_disagrees_with_the_body_fails_as_invalid(
        self, field: str, value: str, says: str
    ) -> None:
        r = rig(succeed)
        setattr(r.message, field, value)
        await settle(r)
        assert r.journal == [("event", "dms.upload.failed"), ("ack",)]
        error = r.publisher.events[0].data.error
        assert error.code == "invalid_command" and says in error.message
        assert r.handlers.deliveries == []

    async def test_json_nested_ten_thousand_deep_fails_as_invalid_and_is_acked(self) -> None:
        r = rig(succeed)
        r.message.body = b"[" * 10_000 + b"]" * 10_000
        await settle(r)
        assert r.journal == [("event", "dms.upload.failed"), ("ack",)]
        assert "nested too deeply" in r.publisher.events[0].data.error.message

    async def test_an_event_the_broker_does_not_take_leaves_the_message_unacked_for_a_give_back(self) -> None:
        r = rig(succeed, publish_fails=ConnectionError("broker gone"))
        # waits 1 s first, so a broker in trouble sees no hot loop
        assert await settle(r) is Ending.GIVE_BACK
        assert r.journal == []  # neither acked nor nacked: closing its queue's channel returns it in order

    async def test_cancelling_the_task_at_shutdown_leaves_the_message_unsettled(self) -> None:
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        r = rig(lambda _attempt: hang())
        task = asyncio.create_task(settle(r))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert r.journal == []  # no nack: the channel's close returns it with the rest, in order

    async def test_a_withdrawn_queue_ends_a_parked_command_unsettled(self) -> None:
        r = rig(fail_with(DmsUnavailable("503")))

        async def withdrawn(_delay_s: float, _sooner: asyncio.Event | None) -> None:
            raise Withdrawn

        assert await r.consumer.run(r.consumer.read(r.message), withdrawn) is Ending.WITHDRAWN  # type: ignore[arg-type]
        assert [e[0] for e in r.journal] == ["notice"] and len(r.handlers.deliveries) == 1  # neither acked nor nacked
