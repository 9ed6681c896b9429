"""A replica's subscriptions to its shard queues, on the real broker: a queue given back (released) returns what
the replica held in order, a shard taken back is served again, a full read-ahead stops reading (nothing is
returned) and a stop ends promptly. The commands are stand-ins: each message names its document; running one
records it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from worker.amqp.acks import DelayedAcks
from worker.amqp.connection import connect_robust
from worker.amqp.read_gate import ReadGate
from worker.intake.consumer import Ending, Incoming, Park
from worker.intake.shard_consumers import ShardConsumers

from .conftest import AMQP_URL

pytestmark = pytest.mark.integration


class Runner:
    """Runs a message ``<document>:<n>`` by recording it; ``gate`` holds every run until it is set."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.redelivered: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    def read(self, message: AbstractIncomingMessage, shard: int | None = None) -> Incoming:
        body = message.body.decode()
        return Incoming(message, shard, None, {}, None, body.split(":")[0])

    async def run(self, incoming: Incoming, park: Park) -> Ending:
        self.started.set()
        await self.gate.wait()
        self.ran.append(incoming.message.body.decode())
        if incoming.message.redelivered:
            self.redelivered.append(self.ran[-1])
        await incoming.message.ack()
        return Ending.SETTLED


@pytest.fixture
def gate() -> ReadGate:
    return ReadGate(longest_s=1.0)


@pytest.fixture
async def connection(gate: ReadGate) -> AsyncIterator[AbstractRobustConnection]:
    """The subscriptions' connection, as the worker has it: its reads pause, so nothing else goes on it."""
    connection = await connect_robust([AMQP_URL], transport_factory=gate)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def publisher() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def queue_names() -> AsyncIterator[list[str]]:
    names = [f"test-shards-{uuid.uuid4().hex[:8]}.{i}" for i in range(2)]
    yield names
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def consumers(connection: AbstractRobustConnection, names: list[str], runner: Runner, **kw: Any) -> ShardConsumers:
    options: dict[str, Any] = {"read_ahead": 4, "read_ahead_bytes": 1 << 20, "poll_s": 0.1} | kw
    limit = options.pop("limit", 8)
    gate = options.pop("gate", None) or ReadGate()
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    return ShardConsumers(connection, names, arguments, runner, lambda: limit, gate=gate, **options)


async def publish(connection: AbstractRobustConnection, queue: str, bodies: list[str]) -> None:
    channel = await connection.channel(publisher_confirms=True)
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body.encode()), routing_key=queue)
    await channel.close()


async def until(condition: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (counts kept by the code under test, not events)
            await asyncio.sleep(0.02)


async def test_a_released_queue_returns_what_it_held_in_order_and_is_served_again(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str]
) -> None:
    runner = Runner()
    shards = consumers(connection, queue_names, runner)
    await shards.start()
    bodies = [f"{doc}:{n}" for n in range(3) for doc in "ab"]  # a:0 b:0 a:1 b:1 a:2 b:2
    try:
        await shards.take(0)
        runner.gate.clear()
        await publish(publisher, queue_names[0], bodies)
        await until(lambda: shards.dispatcher.held == 4)  # the read-ahead: a:0 and b:0 run, 2 more wait
        await shards.release(0)
        runner.gate.set()  # the two that started finish; the rest go back when the channel closes
        await until(lambda: shards.in_flight(0) == 0)
        assert runner.ran == ["a:0", "b:0"]
        await shards.take(0)
        await until(lambda: len(runner.ran) == len(bodies))
        assert runner.ran == bodies  # the returned ones first, in their order, then those never delivered
    finally:
        await shards.stop(grace_s=1)


@contextlib.asynccontextmanager
async def paused_by_large_commands(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str], gate: ReadGate
) -> AsyncIterator[tuple[Runner, ShardConsumers, list[str]]]:
    """A deep read-ahead (64) of 40 large commands (100 KB) against READ_AHEAD_BYTES of 300 KB, one running at a
    time and held until the test sets ``runner.gate``: yields once reading has stopped."""
    runner = Runner()
    shards = consumers(connection, queue_names, runner, read_ahead=64, read_ahead_bytes=300_000, limit=1, gate=gate)
    await shards.start()
    bodies = [f"{doc}:{n}:".ljust(100_000, "x") for n in range(20) for doc in "ab"]
    try:
        runner.gate.clear()
        await shards.take(0)
        await publish(publisher, queue_names[0], bodies)
        await until(lambda: shards.reading_paused)
        yield runner, shards, bodies
    finally:
        await shards.stop(grace_s=1)


async def test_past_read_ahead_bytes_reading_stops_and_nothing_is_returned(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str], gate: ReadGate
) -> None:
    """The bytes held stop near READ_AHEAD_BYTES instead of 40 x 100 KB, every command is then served in order,
    none comes back redelivered."""
    gate.longest_s = 30.0  # no read for the connection's heartbeats while this test looks
    async with paused_by_large_commands(connection, publisher, queue_names, gate) as (runner, shards, bodies):
        most = 0
        for _ in range(20):
            most = max(most, shards.dispatcher.held_bytes)
            await asyncio.sleep(0.05)
        # The budget, plus what the socket's buffer held when reading stopped (about 600 KB here); the rest
        # waits in the broker, not here.
        assert most <= 300_000 + 1_000_000 and shards.dispatcher.held <= 13
        runner.gate.set()
        await until(lambda: len(runner.ran) == len(bodies))
        assert runner.ran == bodies and runner.redelivered == []
        assert not shards.reading_paused and gate.pauses >= 1


async def test_a_long_pause_reads_now_and_then_and_keeps_the_connection(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str], gate: ReadGate
) -> None:
    """Past the gate's longest pause one read lets the connection's heartbeats in; the next delivery stops it."""
    gate.longest_s = 0.3
    async with paused_by_large_commands(connection, publisher, queue_names, gate) as (runner, shards, bodies):
        await until(lambda: gate.pauses >= 3, timeout=5)
        assert shards.reading_paused and not connection.is_closed
        runner.gate.set()
        await until(lambda: len(runner.ran) == len(bodies))
        assert runner.ran == bodies and runner.redelivered == []


async def test_a_queue_released_while_reading_is_paused_closes_promptly_and_keeps_order(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str], gate: ReadGate
) -> None:
    """The close needs the broker's reply, which a paused connection would not read: reading is on for it."""
    async with paused_by_large_commands(connection, publisher, queue_names, gate) as (runner, shards, bodies):
        await shards.release(0)
        runner.gate.set()  # the one running finishes; the rest go back when the channel closes
        await until(lambda: shards.in_flight(0) == 0, timeout=0.9)  # before the gate's longest pause (1 s)
        await shards.take(0)
        await until(lambda: len(runner.ran) == len(bodies))
        assert runner.ran == bodies


async def test_stopping_right_after_a_shard_is_taken_ends_promptly(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str]
) -> None:
    shards = consumers(connection, queue_names, Runner())
    await shards.start()
    await shards.take(0)
    async with asyncio.timeout(3):
        await shards.stop(grace_s=1)


async def test_every_delivery_renews_the_lease(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str]
) -> None:
    """A burst of deliveries is read before the membership heartbeats behind it: each one shows the link works."""
    runner, heard = Runner(), []
    shards = consumers(connection, queue_names, runner, heard=lambda: heard.append(1))
    await shards.start()
    try:
        await shards.take(0)
        await publish(publisher, queue_names[0], [f"d{n}:{n}" for n in range(5)])
        await until(lambda: len(runner.ran) == 5)
        assert len(heard) == 5
    finally:
        await shards.stop(grace_s=1)


class AcksLater(Runner):
    """Settles each command as the worker settles a succeeded upload (its ack waits), and "crashes" (closes its
    channel, so the broker returns what is unacked) the first time ``crash_on`` runs."""

    def __init__(self, acks: DelayedAcks, crash_on: str) -> None:
        super().__init__()
        self.acks = acks
        self.crash_on = crash_on

    async def run(self, incoming: Incoming, park: Park) -> Ending:
        message = incoming.message
        body = message.body.decode()
        if body == self.crash_on and not message.redelivered:
            await message.channel.close()  # the robust channel opens a new one and consumes again
            return Ending.LOST
        self.ran.append(body)
        if message.redelivered:
            self.redelivered.append(body)
        self.acks.later(message, incoming.document)
        return Ending.SETTLED


async def test_a_crash_while_a_documents_next_command_runs_returns_only_that_command(
    connection: AbstractRobustConnection, publisher: AbstractRobustConnection, queue_names: list[str]
) -> None:
    """A succeeded upload's ack may wait (worker.amqp.acks), but not past the start of its document's next
    command: run again then, it would find that command's version."""
    acks = DelayedAcks(delay_s=30)  # nothing goes by the timer in this test
    runner = AcksLater(acks, crash_on="a:1")
    shards = consumers(connection, queue_names, runner, acks=acks)
    await shards.start()
    try:
        await shards.take(0)
        await publish(publisher, queue_names[0], ["a:0", "a:1"])
        await until(lambda: "a:1" in runner.ran)
        assert runner.ran == ["a:0", "a:1"]
        assert runner.redelivered == ["a:1"]  # a:0 was acked before a:1 started
    finally:
        await shards.stop(grace_s=1)
