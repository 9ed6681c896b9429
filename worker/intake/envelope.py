"""What the AMQP envelope says must agree with the CloudEvent it carries (pure, no I/O).

Broker permissions are granted per exchange, and the shard a command waits in is chosen from its routing
key, so a command whose exchange, routing key or AMQP ``type`` disagrees with its body is refused as
``invalid_command``: a service allowed to publish only uploads cannot delete by sending a delete body
through the upload exchange, and a command routed as another document's cannot run out of order.
"""

from __future__ import annotations

import datetime as dt

from worker.amqp.routing import command_destination
from worker.contracts import Command
from worker.errors import InvalidCommand


def check_envelope(
    command: Command, exchange: str | None, routing_key: str | None, amqp_type: str | None, exchange_prefix: str
) -> None:
    data = command.data
    want_exchange, want_key = command_destination(exchange_prefix, command.type, data.tenant_id, data.document_id)
    if exchange != want_exchange:
        raise InvalidCommand(f"a {command.type} command must come through exchange {want_exchange}, not {exchange!r}")
    if routing_key != want_key:
        raise InvalidCommand(
            f"routing key {routing_key!r} does not match the command's tenant and document (expected {want_key})"
        )
    if amqp_type and amqp_type != command.type:
        raise InvalidCommand(f"AMQP type {amqp_type!r} disagrees with the CloudEvent type {command.type!r}")


def issued_at(command_time: dt.datetime | None, amqp_timestamp: dt.datetime | None) -> dt.datetime | None:
    """When the producer issued a command: its CloudEvent ``time``, else the AMQP ``timestamp`` (a naive one
    is UTC, as aio-pika reads it); None when neither says."""
    stamp = command_time or amqp_timestamp
    if stamp is None:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
