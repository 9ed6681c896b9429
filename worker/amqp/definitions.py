"""The worker's RabbitMQ topology as a definitions file (``rabbitmqctl import_definitions``), for ops who
pre-create queues or review them; generated from the same functions the worker declares with."""

from __future__ import annotations

from typing import Any

from worker.amqp.names import MODULUS_HASH_EXCHANGE
from worker.amqp.topology import (
    SHARD_BINDING_KEY,
    command_exchange_names,
    command_queue_arguments,
    results_queue_arguments,
    shard_queue_names,
)
from worker.contracts import OUTCOME_ROUTING_KEYS
from worker.settings import TopologySettings


def definitions(settings: TopologySettings, vhost: str = "/") -> dict[str, Any]:
    def queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": arguments}

    def exchange(name: str, kind: str = "topic") -> dict[str, Any]:
        return {
            "name": name,
            "vhost": vhost,
            "type": kind,
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }

    def binding(source: str, destination: str, key: str) -> dict[str, Any]:
        return {
            "source": source,
            "vhost": vhost,
            "destination": destination,
            "destination_type": "queue",
            "routing_key": key,
            "arguments": {},
        }

    quorum = {"x-queue-type": "quorum"}
    command_args = command_queue_arguments(settings)
    queues = [queue(settings.dead_letter_queue, quorum)]
    queues += [queue(name, command_args) for name in shard_queue_names(settings)]
    bindings = [
        binding(exchange_name, name, SHARD_BINDING_KEY)
        for exchange_name in command_exchange_names(settings)
        for name in shard_queue_names(settings)
    ]
    if settings.results_queue:
        queues.append(queue(settings.results_queue, results_queue_arguments(settings)))
        bindings += [binding(settings.result_exchange, settings.results_queue, key) for key in OUTCOME_ROUTING_KEYS]
    return {
        "exchanges": [
            *(exchange(name, MODULUS_HASH_EXCHANGE) for name in command_exchange_names(settings)),
            exchange(settings.result_exchange),
        ],
        "queues": queues,
        "bindings": bindings,
    }
