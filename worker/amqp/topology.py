"""Declares the RabbitMQ topology the worker needs (idempotent); durable quorum queues throughout.

producers --upload--> [<command exchange>.upload, x-modulus-hash] --+
producers --delete--> [<command exchange>.delete, x-modulus-hash] --+--> [shard queue 0..N-1, single active
          (routing key <tenant>.<lane>: the broker picks the shard)         consumer each] --> replicas
handlers --exhausted retries--> [dead-letter queue]          (crash loops: x-delivery-limit does the same)
handlers --(upload|delete).(succeeded|failed)--> [result exchange, topic] --> [results queue, optional]
handlers --(upload|delete).retrying (notices, best effort)--> [result exchange] --> whoever binds them

Each command is written once, to its shard queue, by the broker's own routing: no worker republishes it.
Both command exchanges bind the same shard queues with the same binding key, so a routing key lands in the
same queue whichever exchange carried it (``x-modulus-hash`` indexes the bound queues in sorted order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from worker.amqp.names import MODULUS_HASH_EXCHANGE, command_exchange_name, shard_queue_name
from worker.contracts import OUTCOME_ROUTING_KEYS
from worker.settings import TopologySettings

COMMAND_KINDS = ("upload", "delete")
SHARD_BINDING_KEY = ""  # x-modulus-hash ignores binding keys; one key for all keeps the queue order sorted
MODULUS_HASH_PLUGIN_HINT = (
    "RabbitMQ lacks the x-modulus-hash exchange type: enable it with "
    "`rabbitmq-plugins enable rabbitmq_sharding` (built in from RabbitMQ 4.3)"
)


class BrokerLacksFeature(RuntimeError):
    """The broker cannot run this topology (a plugin is missing); the message says what to enable."""


class BrokerOutOfResources(RuntimeError):
    """The broker refused to declare a queue for lack of resources (a queue limit, file descriptors, memory);
    the message says which queue, why, and what to do."""


# What RabbitMQ says when a declare fails for lack of resources: a vhost or user queue limit, or errors of
# the Erlang runtime when the node is out of file descriptors or memory.
RESOURCE_WORDS = ("limit", "emfile", "enfile", "file descriptor", "resource", "memory", "enomem")


async def _declare_queue(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> Any:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.AMQPError as exc:
        reason = str(exc.args[0] if exc.args else exc)
        if any(word in reason.lower() for word in RESOURCE_WORDS):
            raise BrokerOutOfResources(
                f"the broker refused to declare queue {name} ({reason}): it lacks resources; a topology is "
                "SHARD_COUNT + 2 quorum queues, about 3 file descriptors each on RabbitMQ 3.10 (README, Broker "
                "capacity): remove unused ones with `python -m worker topology delete` or raise its limits"
            ) from None
        raise


def command_queue_arguments(settings: TopologySettings) -> dict[str, Any]:
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


def results_queue_arguments(settings: TopologySettings) -> dict[str, Any]:
    """The catch-all results queue is bounded: past its length the oldest events are dropped, and events
    older than the TTL expire (quorum queues take both from RabbitMQ 3.10)."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if settings.results_queue_max_length is not None:
        arguments |= {"x-max-length": settings.results_queue_max_length, "x-overflow": "drop-head"}
    if settings.results_queue_message_ttl_s is not None:
        arguments["x-message-ttl"] = round(settings.results_queue_message_ttl_s * 1000)
    return arguments


def command_exchange_names(settings: TopologySettings) -> list[str]:
    return [command_exchange_name(settings.command_exchange, kind) for kind in COMMAND_KINDS]


def shard_queue_names(settings: TopologySettings) -> list[str]:
    return [shard_queue_name(settings.command_queue, i) for i in range(settings.shard_count)]


def all_queue_names(settings: TopologySettings) -> list[str]:
    names = [settings.dead_letter_queue, *shard_queue_names(settings)]
    return names + ([settings.results_queue] if settings.results_queue else [])


@dataclass
class Topology:
    """What the worker goes on to use from what it declared."""

    shard_queue_names: list[str]
    result_exchange: AbstractExchange


async def declare(channel: AbstractChannel, settings: TopologySettings) -> Topology:
    quorum: dict[str, Any] = {"x-queue-type": "quorum"}
    try:
        command_exchanges = [
            await channel.declare_exchange(name, MODULUS_HASH_EXCHANGE, durable=True)
            for name in command_exchange_names(settings)
        ]
    except aiormq.exceptions.AMQPError as exc:
        if "exchange type" in str(exc):
            raise BrokerLacksFeature(MODULUS_HASH_PLUGIN_HINT) from None
        raise
    result_exchange = await channel.declare_exchange(
        settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await _declare_queue(channel, settings.dead_letter_queue, quorum)
    arguments = command_queue_arguments(settings)
    for name in shard_queue_names(settings):
        shard = await _declare_queue(channel, name, arguments)
        for exchange in command_exchanges:
            await shard.bind(exchange, routing_key=SHARD_BINDING_KEY)
    if settings.results_queue:
        arguments = results_queue_arguments(settings)
        results = await _declare_queue(channel, settings.results_queue, arguments)
        for key in OUTCOME_ROUTING_KEYS:  # outcomes only: retrying notices are not kept
            await results.bind(result_exchange, routing_key=key)
    return Topology(shard_queue_names(settings), result_exchange)


async def delete_all(channel: AbstractChannel, settings: TopologySettings) -> None:
    """Removes every queue and exchange ``declare`` makes (tests, benchmarks, a fresh demo). Queued
    commands go with them."""
    for name in all_queue_names(settings):
        await channel.queue_delete(name)
    for name in [*command_exchange_names(settings), settings.result_exchange]:
        await channel.exchange_delete(name)


@dataclass(frozen=True)
class QueueState:
    name: str
    messages: int
    consumers: int


async def exchange_exists(connection: AbstractConnection, name: str) -> bool:
    """A passive declare on a channel of its own (a missing exchange closes the channel that asked)."""
    channel = await connection.channel()
    try:
        await channel.declare_exchange(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def existing_queues(connection: AbstractConnection, settings: TopologySettings) -> list[QueueState]:
    """The topology's queues that exist now, with their depth and consumers (passive declares: nothing is
    created or touched). A missing queue closes the channel that asked, so each miss costs a new one."""
    found: list[QueueState] = []
    channel = await connection.channel()
    try:
        for name in all_queue_names(settings):
            try:
                declared = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                channel = await connection.channel()
                continue
            result = declared.declaration_result
            found.append(QueueState(name, result.message_count or 0, result.consumer_count or 0))
    finally:
        await channel.close()
    return found
