"""Routes commands from the ingress queue to shard queues by document, so each document has one queue.

The ingress queue and every shard queue have a single active consumer (RabbitMQ's
``x-single-active-consumer``), so commands for one document are routed, and then handled, in publish
order even with many replicas: replicas share the load shard by shard, never document by document.
"""

from __future__ import annotations

import asyncio
import hashlib

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.command_parsing import best_effort_ids
from worker.consumer import MAY_HAVE_RUN_HEADER
from worker.republishing import persistent_copy

log = structlog.get_logger(__name__)

DOCUMENT_HEADER = "x-document-id"


def shard_of(document_id: object, shard_count: int) -> int:
    """Stable across processes and versions (unlike ``hash()``); documents without an id go to shard 0."""
    if document_id is None:
        return 0
    digest = hashlib.blake2b(str(document_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def shard_queue_name(command_queue: str, shard: int) -> str:
    return f"{command_queue}.shard.{shard}"


class ShardRouter:
    """Moves each ingress message to its shard queue: publish (confirmed), then ack.

    Messages are routed concurrently (up to the router channel's prefetch) yet published in delivery
    order: each delivery runs as its own task, tasks start in delivery order, and ``route`` reaches the
    channel's publish lock (FIFO, held until the frame is written) before its first suspension. Confirms
    and acks then complete in any order, which is harmless.
    """

    def __init__(self, channel: AbstractChannel, command_queue: str, shard_count: int) -> None:
        self._channel = channel
        self._command_queue = command_queue
        self._shard_count = shard_count

    async def route(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        # Producers that set the header spare us parsing a body of up to 14 MB.
        document_id = headers.get(DOCUMENT_HEADER) or best_effort_ids(message.body).get("document_id")
        shard = shard_of(document_id, self._shard_count)
        if message.redelivered:
            headers[MAY_HAVE_RUN_HEADER] = True  # we may have routed it before: the copy could be a duplicate
        copy = persistent_copy(message, headers)
        while True:
            try:
                await self._channel.default_exchange.publish(
                    copy, routing_key=shard_queue_name(self._command_queue, shard), mandatory=True
                )
                await message.ack()
                break
            except aio_pika.exceptions.DeliveryError as exc:  # refused by the broker: try again shortly
                log.warning("shard_publish_refused", shard=shard, error=repr(exc))
                await asyncio.sleep(1)
            except Exception as exc:  # connection lost: unacked, so the broker redelivers it after recovery
                log.warning("shard_route_failed", shard=shard, error=repr(exc))
                return
