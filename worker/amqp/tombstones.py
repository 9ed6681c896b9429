"""Tombstones of offboarded tenants, kept on the broker: one durable exchange per tenant,
``<COMMAND_EXCHANGE>.offboarded.<tenant uuid>``, bound to nothing (it routes nowhere).

Why there: every replica that could take the tenant's commands uses this broker and vhost, so every one of
them sees it; a durable exchange survives broker restarts, is cluster-wide metadata (no queue, no file
descriptors), and is part of the broker's exported definitions. ``topology delete`` leaves it alone: it is
about the tenant, not the topology. Its arguments say when and which repository, for whoever lists the
broker's exchanges (``rabbitmqctl list_exchanges name arguments``).

Looking costs a passive declare on a channel of its own (a miss closes the channel that asked).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection

from worker.amqp.names import tombstone_exchange_name
from worker.amqp.topology import exchange_exists

OFFBOARDED_AT_ARGUMENT = "x-offboarded-at"
REPOSITORY_ARGUMENT = "x-repository-id"


class BrokerTombstones:
    def __init__(self, connection: AbstractConnection, command_exchange: str) -> None:
        self._connection = connection
        self._prefix = command_exchange

    def name(self, tenant_id: uuid.UUID) -> str:
        return tombstone_exchange_name(self._prefix, str(tenant_id))

    async def holds(self, tenant_id: uuid.UUID) -> bool:
        return await exchange_exists(self._connection, self.name(tenant_id))

    async def record(self, tenant_id: uuid.UUID, repository_id: str | None) -> bool:
        """Lays the tombstone; False when it was there already (an earlier run began the offboarding)."""
        if await self.holds(tenant_id):
            return False
        arguments: dict[str, Any] = {OFFBOARDED_AT_ARGUMENT: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        if repository_id:
            arguments[REPOSITORY_ARGUMENT] = repository_id
        channel = await self._connection.channel()
        async with channel:
            await channel.declare_exchange(
                self.name(tenant_id), aio_pika.ExchangeType.FANOUT, durable=True, arguments=arguments
            )
        return True

    async def remove(self, tenant_id: uuid.UUID) -> bool:
        """Re-enables the tenant; False when there was no tombstone."""
        if not await self.holds(tenant_id):
            return False
        channel = await self._connection.channel()
        async with channel:
            await channel.exchange_delete(self.name(tenant_id))
        return True
