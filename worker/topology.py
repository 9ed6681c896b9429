"""Declares the RabbitMQ topology the worker needs (idempotent); durable quorum queues throughout.

producers --(upload|delete)--> [command exchange, topic] --> [ingress queue, single active consumer]
shard router --(by document)--> [shard queue 0..N-1, each single active consumer] --> handlers
handlers --exhausted retries--> [dead-letter queue]          (crash loops: x-delivery-limit does the same)
handlers --(upload|delete).(succeeded|failed)--> [result exchange, topic] --> [results queue, optional]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from worker.settings import Settings
from worker.sharding import shard_queue_name

COMMAND_ROUTING_KEYS = ("upload", "delete")


def command_queue_arguments(settings: Settings) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-delivery-limit": settings.delivery_limit,
        # at-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow.
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def all_queue_names(settings: Settings) -> list[str]:
    names = [settings.command_queue, settings.dead_letter_queue]
    names += [shard_queue_name(settings.command_queue, i) for i in range(settings.shard_count)]
    return names + ([settings.results_queue] if settings.results_queue else [])


@dataclass
class Topology:
    """What the worker goes on to use from what it declared."""

    shard_queues: list[AbstractQueue]
    result_exchange: AbstractExchange


async def declare(channel: AbstractChannel, settings: Settings) -> Topology:
    quorum: dict[str, Any] = {"x-queue-type": "quorum"}
    command_exchange = await channel.declare_exchange(
        settings.command_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    result_exchange = await channel.declare_exchange(
        settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_queue(settings.dead_letter_queue, durable=True, arguments=quorum)
    arguments = command_queue_arguments(settings)
    ingress = await channel.declare_queue(settings.command_queue, durable=True, arguments=arguments)
    for key in COMMAND_ROUTING_KEYS:
        await ingress.bind(command_exchange, routing_key=key)
    shards = [
        await channel.declare_queue(shard_queue_name(settings.command_queue, i), durable=True, arguments=arguments)
        for i in range(settings.shard_count)
    ]
    if settings.results_queue:
        results = await channel.declare_queue(settings.results_queue, durable=True, arguments=quorum)
        await results.bind(result_exchange, routing_key="#")
    return Topology(shards, result_exchange)


async def delete_all(channel: AbstractChannel, settings: Settings) -> None:
    """Removes every queue and exchange ``declare`` makes (tests, benchmarks, a fresh demo). Queued
    commands go with them."""
    for name in all_queue_names(settings):
        await channel.queue_delete(name)
    for name in (settings.command_exchange, settings.result_exchange):
        await channel.exchange_delete(name)
