"""A replica's subscriptions to its shard queues, on the real broker: a queue given back (released, paused for
memory) returns what the replica held in order, a shard taken back is served again, and a stop ends
promptly. The commands are stand-ins: each message names its document; running one records it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from worker.intake.consumer import Ending, Incoming, Park
from worker.intake.shard_consumers import ShardConsumers

from .conftest import AMQP_URL

pytestmark = pytest.mark.integration


class Runner:
    """Runs a message ``<document>:<n>`` by recording it; ``gate`` holds every run until it is set."""

    def __init__(self) -> None:
        self.ran: list[str] = []
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
        await incoming.message.ack()
        return Ending.SETTLED


@pytest.fixture
async def connection() -> AsyncIterator[AbstractRobustConnection]:
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
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    return ShardConsumers(connection, names, arguments, runner, lambda: limit, **options)


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
    connection: AbstractRobustConnection, queue_names: list[str]
) -> None:
    runner = Runner()
    shards = consumers(connection, queue_names, runner)
    await shards.start()
    bodies = [f"{doc}:{n}" for n in range(3) for doc in "ab"]  # a:0 b:0 a:1 b:1 a:2 b:2
    try:
        await shards.take(0)
        runner.gate.clear()
        await publish(connection, queue_names[0], bodies)
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


async def test_past_read_ahead_bytes_an_idle_queue_is_paused_then_served_in_order(
    connection: AbstractRobustConnection, queue_names: list[str]
) -> None:
    runner = Runner()
    # 100 bytes of read-ahead: queue 1's deliveries (nothing of them started) push it over and are returned.
    shards = consumers(connection, queue_names, runner, read_ahead=4, read_ahead_bytes=100, limit=1)
    await shards.start()
    first = [f"x:{n}".ljust(40) for n in range(3)]
    second = [f"y{n}:{n}".ljust(40) for n in range(6)]
    try:
        runner.gate.clear()
        await shards.take(0)
        await publish(connection, queue_names[0], first)
        await runner.started.wait()  # x:0 runs (the only place), x:1 and x:2 wait behind it
        await shards.take(1)
        await publish(connection, queue_names[1], second)
        await until(lambda: shards.paused == 1)
        assert shards.dispatcher.held_in(1) == 0 and shards.dispatcher.held_bytes <= 120
        runner.gate.set()
        await until(lambda: len(runner.ran) == len(first) + len(second))
        assert [r for r in runner.ran if r.startswith("x")] == first
        assert [r for r in runner.ran if r.startswith("y")] == second  # returned and redelivered in order
        assert len(set(runner.ran)) == len(runner.ran)
    finally:
        await shards.stop(grace_s=1)


async def test_stopping_right_after_a_shard_is_taken_ends_promptly(
    connection: AbstractRobustConnection, queue_names: list[str]
) -> None:
    shards = consumers(connection, queue_names, Runner())
    await shards.start()
    await shards.take(0)
    async with asyncio.timeout(3):
        await shards.stop(grace_s=1)


async def test_every_delivery_renews_the_lease(connection: AbstractRobustConnection, queue_names: list[str]) -> None:
    """A burst of deliveries is read before the membership heartbeats behind it: each one shows the link works."""
    runner, heard = Runner(), []
    shards = consumers(connection, queue_names, runner, heard=lambda: heard.append(1))
    await shards.start()
    try:
        await shards.take(0)
        await publish(connection, queue_names[0], [f"d{n}:{n}" for n in range(5)])
        await until(lambda: len(runner.ran) == 5)
        assert len(heard) == 5
    finally:
        await shards.stop(grace_s=1)
