"""Answers the operator's census: how many commands of a tenant this replica holds (running, parked in retry
backoff, or waiting in its read-ahead). ``python -m worker tenant offboard`` asks every replica before it
deletes anything, and refuses while the tenant still has commands on their way.

A request is a message on the fanout exchange ``<COMMAND_QUEUE>.census``: ``{"tenant": "<uuid>"}`` with a
``reply_to`` queue; the answer goes there through the default exchange: ``{"member": <the replica's
membership id>, "tenant": ..., "held": n}``. The member id is the one its heartbeats carry, so the asker can
tell which live replica has not answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

log = structlog.get_logger(__name__)


class CensusResponder:
    def __init__(self, channel: AbstractChannel, exchange_name: str, member: str, held_for: Callable[[str], int]):
        self._channel = channel
        self._exchange_name = exchange_name
        self._member = member
        self._held_for = held_for

    async def start(self) -> None:
        exchange = await self._channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True
        )
        inbox = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await inbox.bind(exchange)
        await inbox.consume(self._answer, no_ack=True)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        try:
            tenant = str(json.loads(message.body)["tenant"])
        except (ValueError, KeyError, TypeError):
            return
        if not message.reply_to:
            return
        reply = {"member": self._member, "tenant": tenant, "held": self._held_for(tenant)}
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(json.dumps(reply).encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to,
                mandatory=False,  # the asker may have gone: nothing to keep
            )
        except Exception as exc:  # the asker sees a replica that did not answer
            log.info("census_answer_not_sent", error=repr(exc))
