"""Which shard queue a routing key lands in, asked of RabbitMQ itself (for tests and benchmarks that must
know whether two tenants share a queue): ``worker.amqp.shard_probe`` on a connection of its own."""

from __future__ import annotations

import aio_pika

from worker.amqp.shard_probe import shards_of as probe


async def shards_of(amqp_url: str, shard_count: int, keys: list[str]) -> dict[str, int]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        return await probe(connection, shard_count, keys)
