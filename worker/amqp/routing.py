"""Which shard queue a command lands in: the producer's routing key, hashed by the broker (pure, no I/O).

Producers publish every command with routing key ``<tenant_id>.<lane>``, where the lane is the document
UUID read as a 128-bit number modulo ``LANES`` (its last hex digit). The command exchanges are
RabbitMQ ``x-modulus-hash`` exchanges: they send a routing key to bound queue number
``phash2(key) mod queues``, the same queue for every command of a document (so per-document order is the
queue's order) and only ``LANES`` queues for all of a tenant's documents (so one tenant's backlog sits in
front of few other tenants' commands).
"""

from __future__ import annotations

import uuid

from worker.amqp.names import command_exchange_name
from worker.contracts import routing_key as kind_of

LANES = 16  # part of the producer contract (the last hex digit of the UUID): changing it moves documents


def lane_of(document_id: uuid.UUID) -> int:
    return document_id.int % LANES


def routing_key(tenant_id: uuid.UUID, document_id: uuid.UUID) -> str:
    return f"{tenant_id}.{lane_of(document_id)}"


def tenant_of_routing_key(key: str) -> str | None:
    """The tenant part of a routing key, for fairness bookkeeping only (never trusted for access)."""
    tenant, _, lane = key.partition(".")
    return tenant if lane else None


def command_destination(
    exchange_prefix: str, event_type: str, tenant_id: uuid.UUID, document_id: uuid.UUID
) -> tuple[str, str]:
    """(exchange, routing key) a command of this type, tenant and document is published with."""
    return command_exchange_name(exchange_prefix, kind_of(event_type)), routing_key(tenant_id, document_id)
