"""A replica's subscriptions to its shard queues, on the real broker: a shard given up and taken back (after
a broker restart, a failover or a work-balancing swap) is served again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from worker.intake.shard_consumers import HEADROOM, ShardConsumers

from .conftest import AMQP_URL

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()


async def delete_queues(names: list[str]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def test_a_shard_taken_back_after_release_is_consumed_again(connection: AbstractRobustConnection) -> None:
    name = f"test-shards-{uuid.uuid4().hex[:8]}.0"
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage, shard: int) -> None:
        await message.ack()
        await received.put(message.body)

    # One queue and one slot: its share is 1 before the release and after the retake.
    shards = ShardConsumers(connection, [name], {}, on_message, in_flight_limit=1, interval_s=0.05)
    publisher = await connection.channel()

    async def publish(body: bytes) -> None:
        await publisher.default_exchange.publish(aio_pika.Message(body), routing_key=name)

    try:
        await shards.start()
        await shards.take(0)
        await publish(b"first")
        assert await asyncio.wait_for(received.get(), 10) == b"first"

        await shards.release(0)
        await publish(b"while released")
        await asyncio.sleep(0.3)  # several splits: the released queue stays unsubscribed
        assert received.empty()

        await shards.take(0)
        assert await asyncio.wait_for(received.get(), 10) == b"while released"
        await publish(b"after")
        assert await asyncio.wait_for(received.get(), 10) == b"after"
    finally:
        await shards.stop()
        await connection.close()  # its channels first: a robust channel would declare a deleted queue again
        await delete_queues([name])


async def test_moving_slots_between_queues_never_exceeds_the_in_flight_limit_and_headroom(
    connection: AbstractRobustConnection,
) -> None:
    names = [f"test-shards-{uuid.uuid4().hex[:8]}.{n}" for n in range(2)]
    holding_s = {0: 0.6, 1: 0.05}  # the first queue's work drains slowly, the second's fast
    now = max_seen = handled = 0
    all_handled = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage, shard: int) -> None:
        nonlocal now, max_seen, handled
        now += 1
        max_seen = max(max_seen, now)
        try:
            await asyncio.sleep(holding_s[shard])
            await message.ack()
        finally:
            now -= 1
            handled += 1
            if handled == 90:
                all_handled.set()

    shards = ShardConsumers(connection, names, {}, on_message, in_flight_limit=4, interval_s=0.05)
    publisher = await connection.channel()

    async def publish(shard: int, count: int) -> None:
        for i in range(count):
            await publisher.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=names[shard])

    try:
        await shards.start()
        await shards.take(0)
        await shards.take(1)
        await publish(0, 30)
        await asyncio.sleep(1.0)  # the first queue holds most of the slots now
        await publish(1, 60)  # its share shrinks (a slow drain) while the other's grows
        await asyncio.wait_for(all_handled.wait(), 30)
        assert max_seen <= 4 + HEADROOM  # the second queue may take its first slot before the first drains
    finally:
        await shards.stop()
        await connection.close()
        await delete_queues(names)


async def test_stopping_right_after_a_shard_is_taken_ends_promptly(connection: AbstractRobustConnection) -> None:
    # take() wakes the slot loop; a stop in the same turn must still end it (on Python 3.11 a cancelled
    # asyncio.wait_for whose event fires in that turn returns instead of raising, and the loop ran on).
    name = f"test-shards-{uuid.uuid4().hex[:8]}.0"

    async def on_message(message: AbstractIncomingMessage, shard: int) -> None:
        await message.ack()

    shards = ShardConsumers(connection, [name], {}, on_message, in_flight_limit=1, interval_s=0.05)
    try:
        await shards.start()
        await asyncio.sleep(0.1)  # the loop waits for its next look
        await shards.take(0)
        async with asyncio.timeout(15):
            await shards.stop()
    finally:
        await connection.close()
        await delete_queues([name])
