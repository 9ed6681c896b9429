"""Dead-letter queue tooling for ops: list, show, replay (with filters, dry run, limit, rate) and purge.

Replay never loses a message: the copy is published to the command exchange with publisher confirms
first, and only then is the original acked from the DLQ. Messages not selected are handed back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.consumer import ATTEMPT_HEADER, FIRST_ATTEMPT_HEADER
from worker.contracts import routing_key
from worker.republishing import persistent_copy
from worker.settings import Settings

REPLAY_HEADER = "x-replay-count"
_STRIPPED_ON_REPLAY = {
    ATTEMPT_HEADER,
    "x-error-code",
    "x-error-message",
    "x-dead-lettered-at",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
}


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    command_type: str | None
    tenant_id: str | None
    document_id: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    first_death: dt.datetime | None
    last_death: dt.datetime | None
    replays: int

    def as_row(self) -> dict[str, Any]:
        row = dict(vars(self))
        for key in ("first_death", "last_death"):
            row[key] = row[key].isoformat() if row[key] else None
        return row


@dataclass(frozen=True)
class Selection:
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error_code: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None
    message_id: str | None = None

    def matches(self, letter: DeadLetter, now: dt.datetime) -> bool:
        if self.message_id and letter.message_id != self.message_id:
            return False
        if self.tenant_id and letter.tenant_id != str(self.tenant_id):
            return False
        if self.document_id and letter.document_id != str(self.document_id):
            return False
        if self.error_code and letter.error_code != self.error_code:
            return False
        age = (now - letter.last_death).total_seconds() if letter.last_death else None
        if self.older_than_s is not None and (age is None or age < self.older_than_s):
            return False
        return not (self.newer_than_s is not None and (age is None or age > self.newer_than_s))


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return _parse_time(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    """What ops need to know about one dead-lettered message (our headers, or RabbitMQ's ``x-death``)."""
    headers: dict[str, Any] = dict(message.headers or {})
    try:
        body = json.loads(message.body)
        data = body.get("data") if isinstance(body, dict) else {}
    except ValueError:
        body, data = {}, {}
    data = data if isinstance(data, dict) else {}
    deaths = headers.get("x-death") or []
    death_times = [t for d in deaths if isinstance(d, dict) and (t := _parse_time(d.get("time"))) is not None]
    reason = next((str(d.get("reason")) for d in deaths if isinstance(d, dict)), None)
    first = _parse_time(headers.get(FIRST_ATTEMPT_HEADER)) or (min(death_times) if death_times else None)
    last = _parse_time(headers.get("x-dead-lettered-at")) or (max(death_times) if death_times else None)
    return DeadLetter(
        message_id=message.message_id,
        command_type=message.type or (body.get("type") if isinstance(body, dict) else None),
        tenant_id=str(data["tenant_id"]) if "tenant_id" in data else None,
        document_id=str(data["document_id"]) if "document_id" in data else None,
        error_code=str(headers.get("x-error-code") or (f"broker_{reason}" if reason else "")) or None,
        error_message=str(headers["x-error-message"]) if "x-error-message" in headers else None,
        attempts=int(headers.get(ATTEMPT_HEADER, 1)),
        first_death=first,
        last_death=last,
        replays=int(headers.get(REPLAY_HEADER, 0)),
    )


class DeadLetterQueue:
    def __init__(self, channel: AbstractChannel, settings: Settings) -> None:
        self._channel = channel
        self._settings = settings

    async def _take_all(self, scan_limit: int) -> list[AbstractIncomingMessage]:
        """Holds up to ``scan_limit`` messages unacked, so none is seen twice while we decide."""
        queue = await self._channel.declare_queue(self._settings.dead_letter_queue, passive=True)
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < scan_limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
        return taken

    @staticmethod
    async def _give_back(messages: Sequence[AbstractIncomingMessage]) -> None:
        for message in messages:
            await message.nack(requeue=True)

    @staticmethod
    def _partition(
        taken: Sequence[AbstractIncomingMessage], selection: Selection, limit: int | None = None
    ) -> tuple[list[tuple[AbstractIncomingMessage, DeadLetter]], list[AbstractIncomingMessage]]:
        """(selected messages with their description, the rest), at most ``limit`` selected."""
        now = dt.datetime.now(dt.UTC)
        chosen: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        rest: list[AbstractIncomingMessage] = []
        for message in taken:
            letter = describe(message)
            if selection.matches(letter, now) and (limit is None or len(chosen) < limit):
                chosen.append((message, letter))
            else:
                rest.append(message)
        return chosen, rest

    async def inspect(self, selection: Selection, scan_limit: int = 10_000) -> list[DeadLetter]:
        taken = await self._take_all(scan_limit)
        try:
            return [letter for _, letter in self._partition(taken, selection)[0]]
        finally:
            await self._give_back(taken)

    async def replay(
        self,
        selection: Selection,
        *,
        dry_run: bool = False,
        limit: int | None = None,
        rate_per_s: float | None = None,
        scan_limit: int = 10_000,
    ) -> list[DeadLetter]:
        taken = await self._take_all(scan_limit)
        chosen, rest = self._partition(taken, selection, limit)
        if dry_run:
            await self._give_back(taken)
            return [letter for _, letter in chosen]
        exchange = await self._channel.get_exchange(self._settings.command_exchange)
        replayed: list[DeadLetter] = []
        try:
            for message, letter in chosen:
                await exchange.publish(_replay_copy(message), routing_key=_command_routing_key(message), mandatory=True)
                await message.ack()  # only now: the copy is safely with the broker
                replayed.append(letter)
                if rate_per_s:
                    await asyncio.sleep(1 / rate_per_s)
        finally:
            await self._give_back([m for m, _ in chosen[len(replayed) :]] + rest)
        return replayed

    async def purge(self, selection: Selection, *, dry_run: bool = False, scan_limit: int = 10_000) -> int:
        taken = await self._take_all(scan_limit)
        chosen, keep = self._partition(taken, selection)
        doomed = [m for m, _ in chosen]
        if dry_run:
            await self._give_back(taken)
            return len(doomed)
        for message in doomed:
            await message.ack()
        await self._give_back(keep)
        return len(doomed)


def _command_routing_key(message: AbstractIncomingMessage) -> str:
    # Both command keys lead to the same ingress queue and the body's type decides; without an AMQP type
    # any bound key will do.
    return routing_key(message.type) if message.type else "upload"


def _replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers: dict[str, Any] = {k: v for k, v in (message.headers or {}).items() if k not in _STRIPPED_ON_REPLAY}
    headers[REPLAY_HEADER] = int(headers.get(REPLAY_HEADER, 0)) + 1
    headers.pop(FIRST_ATTEMPT_HEADER, None)
    return persistent_copy(message, headers)
