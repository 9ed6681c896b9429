"""Follows result events as they are published: for ``publish --wait`` and the ``results`` command.

A subscription is an exclusive, auto-delete queue bound to the result exchange; it sees the events published
after it was bound (so bind before publishing the command you wait for), and vanishes with its connection.
The catch-all results queue is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

KINDS = ("upload", "delete")
OUTCOMES = ("succeeded", "failed")


@dataclass(frozen=True)
class EventFilter:
    """Which result events to show; ``None`` means any. Pure: the broker filters by type and outcome
    (routing key), the rest is checked here."""

    kind: str | None = None  # upload | delete
    outcome: str | None = None  # succeeded | failed
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    command_id: str | None = None

    def binding_key(self) -> str:
        return f"{self.kind or '*'}.{self.outcome or '*'}"

    def matches(self, event: dict[str, Any]) -> bool:
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        if self.tenant_id is not None and data.get("tenant_id") != str(self.tenant_id):
            return False
        if self.document_id is not None and data.get("document_id") != str(self.document_id):
            return False
        return self.command_id is None or data.get("command_id") == self.command_id


def succeeded(event: dict[str, Any]) -> bool:
    return str(event.get("type", "")).endswith(".succeeded")


class ResultSubscription:
    """``subscription = await ResultSubscription.open(channel, exchange, EventFilter(...))``, then read
    ``subscription.events()`` or ``await subscription.next_event(timeout_s)``."""

    def __init__(self, queue: AbstractQueue, event_filter: EventFilter) -> None:
        self._queue = queue
        self._filter = event_filter

    @classmethod
    async def open(cls, channel: AbstractChannel, exchange_name: str, event_filter: EventFilter) -> ResultSubscription:
        exchange = await channel.get_exchange(exchange_name, ensure=True)  # a clear 404 if there is none
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=event_filter.binding_key())
        return cls(queue, event_filter)

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """The matching events, in the order they arrive, for as long as the caller keeps reading."""
        async with self._queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                try:
                    event = json.loads(message.body)
                except ValueError:
                    continue
                if isinstance(event, dict) and self._filter.matches(event):
                    yield event

    async def next_event(self, timeout_s: float | None) -> dict[str, Any]:
        """The first matching event; ``TimeoutError`` if none comes within ``timeout_s``."""
        async with asyncio.timeout(timeout_s), contextlib.aclosing(self.events()) as events:
            async for event in events:
                return event
        raise AssertionError("unreachable: the queue iterator does not end")
