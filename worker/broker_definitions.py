"""The worker's RabbitMQ topology as a definitions file (``rabbitmqctl import_definitions``), for ops who
pre-create queues or review them; generated from the same functions the worker declares with."""

from __future__ import annotations

from typing import Any

from worker.settings import Settings
from worker.sharding import shard_queue_name
from worker.topology import COMMAND_ROUTING_KEYS, command_queue_arguments


def definitions(settings: Settings, vhost: str = "/") -> dict[str, Any]:
    def queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": arguments}

    def exchange(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "vhost": vhost,
            "type": "topic",
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
    queues = [queue(settings.dead_letter_queue, quorum), queue(settings.command_queue, command_args)]
    queues += [queue(shard_queue_name(settings.command_queue, i), command_args) for i in range(settings.shard_count)]
    bindings = [binding(settings.command_exchange, settings.command_queue, key) for key in COMMAND_ROUTING_KEYS]
    if settings.results_queue:
        queues.append(queue(settings.results_queue, quorum))
        bindings.append(binding(settings.result_exchange, settings.results_queue, "#"))
    return {
        "exchanges": [exchange(settings.command_exchange), exchange(settings.result_exchange)],
        "queues": queues,
        "bindings": bindings,
    }
