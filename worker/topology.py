"""Declares the RabbitMQ topology the worker needs (idempotent): durable quorum queues throughout.

producers --(upload|delete)--> [command exchange, topic] --> [command queue]
[command queue] --nack/delivery-limit--> [dead-letter queue]
worker --retry--> [retry.<ms> queue, TTL] --expires--> [command queue]
worker --exhausted--> [dead-letter queue]
worker --(upload|delete).(succeeded|failed)--> [result exchange, topic] --> [results queue, optional]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from worker.settings import Settings

COMMAND_ROUTING_KEYS = ("upload", "delete")


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _dead_letter_to(queue: str) -> dict[str, Any]:
    # at-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow.
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def retry_queue_name(settings: Settings, delay_ms: int) -> str:
    return f"{settings.retry_queue_prefix}.{delay_ms}ms"


@dataclass
class Topology:
    command_exchange: AbstractExchange
    command_queue: AbstractQueue
    result_exchange: AbstractExchange
    dead_letter_queue: AbstractQueue


async def declare(channel: AbstractChannel, settings: Settings) -> Topology:
    command_exchange = await channel.declare_exchange(
        settings.command_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    result_exchange = await channel.declare_exchange(
        settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead_letter_queue = await channel.declare_queue(settings.dead_letter_queue, durable=True, arguments=_quorum())
    command_queue = await channel.declare_queue(
        settings.command_queue,
        durable=True,
        arguments=_quorum(
            **_dead_letter_to(settings.dead_letter_queue), **{"x-delivery-limit": settings.delivery_limit}
        ),
    )
    for key in COMMAND_ROUTING_KEYS:
        await command_queue.bind(command_exchange, routing_key=key)
    for delay_ms in sorted(set(settings.retry_delays_ms)):
        await channel.declare_queue(
            retry_queue_name(settings, delay_ms),
            durable=True,
            arguments=_quorum(**_dead_letter_to(settings.command_queue), **{"x-message-ttl": delay_ms}),
        )
    if settings.results_queue:
        results = await channel.declare_queue(settings.results_queue, durable=True, arguments=_quorum())
        await results.bind(result_exchange, routing_key="#")
    return Topology(command_exchange, command_queue, result_exchange, dead_letter_queue)
