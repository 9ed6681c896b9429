"""Acks sent together (``worker.amqp.acks.DelayedAcks``), on the real broker: a multiple ack never acks a
delivery that was not settled, acks past a gap are sent one by one, and the channel stays open."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from worker.amqp.acks import DelayedAcks

from .conftest import AMQP_URL

pytestmark = pytest.mark.integration


async def test_only_settled_deliveries_are_acked_and_the_rest_come_back_in_order() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    name = f"test.acks.{uuid.uuid4().hex[:8]}"
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, arguments={"x-queue-type": "quorum"}, durable=True)
        try:
            for n in range(1, 9):
                await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=name)
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=20)
            held = [await (await consuming.get_queue(name)).get(no_ack=False) for _ in range(8)]
            assert [m.body for m in held if m] == [str(n).encode() for n in range(1, 9)]
            acks = DelayedAcks(delay_s=30)  # only flush sends
            for n in (1, 2, 4, 5, 8):  # 3, 6 and 7 are still "running"
                acks.later(held[n - 1], None)
            await acks.flush()
            await acks.now(held[2])  # 3: a run through 4 and 5, which were acked alone
            assert not consuming.is_closed  # no ack of an unknown tag
            await consuming.close()  # 6 and 7 were never acked: they come back, in order
            back: list[bytes] = []
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:  # the queue takes them back a moment later
                message = await queue.get(no_ack=True, fail=False)
                if message is not None:
                    back.append(message.body)
                elif len(back) >= 2:
                    break
                else:
                    await asyncio.sleep(0.05)
            assert back == [b"6", b"7"]
        finally:
            await channel.queue_delete(name)
