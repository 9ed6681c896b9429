"""Which shard queues routing keys land in, asked of RabbitMQ itself.

``x-modulus-hash`` sends key K to bound queue number ``phash2([K]) mod N`` in name order, which Python cannot
compute. So a scratch exchange of that type, bound to N exclusive scratch queues whose names sort like the
shard queues' names, routes one probe per key, and each probe says where it landed. The scratch queues are
classic, exclusive and empty but for the probes (no quorum queue, no file descriptors held); they go with
are deleted at the end, and so is the exchange.
"""

from __future__ import annotations

import uuid

import aio_pika
from aio_pika.abc import AbstractConnection

from worker.amqp.names import MODULUS_HASH_EXCHANGE, shard_queue_name


async def shards_of(connection: AbstractConnection, shard_count: int, keys: list[str]) -> dict[str, int]:
    """Routing key -> the number of the shard queue it lands in."""
    prefix = f"shard-probe.{uuid.uuid4().hex[:8]}"
    channel = await connection.channel(publisher_confirms=True)
    async with channel:
        exchange = await channel.declare_exchange(prefix, MODULUS_HASH_EXCHANGE, auto_delete=True)
        queues: list[aio_pika.abc.AbstractQueue] = []
        try:
            for n in range(shard_count):
                queue = await channel.declare_queue(shard_queue_name(prefix, n), exclusive=True, auto_delete=True)
                await queue.bind(exchange)
                queues.append(queue)
            for key in keys:
                await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
            found: dict[str, int] = {}
            for n, queue in enumerate(queues):
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    found[message.body.decode()] = n
            return found
        finally:
            for queue in queues:
                await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
