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
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractQueue

KINDS = ("upload", "delete")
OUTCOMES = ("succeeded", "failed")
NOTICES = ("retrying",)  # progress before an outcome: upload.retrying, delete.retrying


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


def is_outcome(event: dict[str, Any]) -> bool:
    """A command's final word (succeeded or failed), not a notice on the way."""
    return str(event.get("type", "")).rsplit(".", 1)[-1] in OUTCOMES


def describe_notice(event: dict[str, Any]) -> str:
    """``retrying: attempt 2 failed (dms_unavailable: ...); next attempt in 5 s`` (pure)."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    delay_s = (data.get("next_attempt_in_ms") or 0) / 1000
    return (
        f"retrying: attempt {data.get('attempt')} failed ({error.get('code')}: {error.get('message')}); "
        f"next attempt in {delay_s:g} s"
    )


class ResultSubscription:
    """``subscription = await ResultSubscription.open(channel, exchange, EventFilter(...))``, then read
    ``subscription.events()``."""

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

    async def outcome(self, timeout_s: float | None, on_notice: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The first matching outcome event (succeeded or failed); each retry notice before it goes to
        ``on_notice``. ``TimeoutError`` if no outcome comes within ``timeout_s``."""
        async with asyncio.timeout(timeout_s), contextlib.aclosing(self.events()) as events:
            async for event in events:
                if is_outcome(event):
                    return event
                on_notice(event)
        raise AssertionError("unreachable: the queue iterator does not end")
