"""Which shard queue a routing key lands in, asked of RabbitMQ itself (for tests and benchmarks that must
know whether two tenants share a queue).

``x-modulus-hash`` sends key K to bound queue number ``phash2(K) mod N`` in sorted name order, and Python
cannot compute Erlang's ``phash2``. So a scratch exchange of that type, bound to N scratch queues whose
names sort like the shard queues' names, routes one probe per key, and the probes say where they landed.
"""

from __future__ import annotations

import uuid

import aio_pika

from worker.amqp.names import MODULUS_HASH_EXCHANGE, shard_queue_name


async def shards_of(amqp_url: str, shard_count: int, keys: list[str]) -> dict[str, int]:
    prefix = f"oracle.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(prefix, MODULUS_HASH_EXCHANGE, auto_delete=True)
        queues = []
        for n in range(shard_count):
            queue = await channel.declare_queue(shard_queue_name(prefix, n), exclusive=True)
            await queue.bind(exchange)
            queues.append(queue)
        for key in keys:
            await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
        found: dict[str, int] = {}
        for n, queue in enumerate(queues):
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                found[message.body.decode()] = n
        await exchange.delete()
        return found
