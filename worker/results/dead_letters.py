"""Dead-letter queue tooling for ops: list, show, replay (with filters, dry run, limit, rate) and purge.

Replay never loses a message: the copy is published to the command exchange with publisher confirms
first, and only then is the original acked from the DLQ. Messages not selected are handed back. A
``Progress`` hears of every message scanned and every one replayed or purged, as it happens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.amqp.confirms import delivery_lost, publish_until_confirmed
from worker.amqp.copies import persistent_copy
from worker.amqp.names import (
    ATTEMPT_HEADER,
    BROKER_DEATH_HEADERS,
    DEAD_LETTERED_AT_HEADER,
    DEATH_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    FIRST_ATTEMPT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REPLAY_HEADER,
    WORKER_ONLY_HEADERS,
)
from worker.amqp.routing import command_destination
from worker.settings import Settings

_STRIPPED_ON_REPLAY = {*WORKER_ONLY_HEADERS, *BROKER_DEATH_HEADERS}


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
    headers: dict[str, Any] | None = field(default=None, compare=False)  # with ``full``: JSON-ready
    body: Any = field(default=None, compare=False)  # with ``full``: the parsed body, long strings shortened

    def as_row(self) -> dict[str, Any]:
        row = dict(vars(self))
        for key in ("first_death", "last_death"):
            row[key] = row[key].isoformat() if row[key] else None
        if self.headers is None:
            del row["headers"], row["body"]
        return row


class Progress(Protocol):
    """Told of each step as it happens (the CLI draws a bar or writes JSON lines)."""

    def start(self, stage: str, total: int | None) -> None: ...

    def advance(self, letter: DeadLetter | None = None) -> None: ...


class _Silent:
    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, letter: DeadLetter | None = None) -> None:
        pass


@dataclass(frozen=True)
class Selection:
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error_code: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None
    message_id: str | None = None

    def selects_everything(self) -> bool:
        return self == Selection()

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


SHOWN_STRING_LENGTH = 200


def shorten(value: Any, keep: int = SHOWN_STRING_LENGTH) -> Any:
    """``value`` made JSON-ready for a terminal: long strings (base64 content) cut, with their length."""
    if isinstance(value, dict):
        return {str(k): shorten(v, keep) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shorten(v, keep) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str) and len(value) > keep:
        return f"{value[:keep]}... ({len(value)} characters)"
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _full_body(raw: bytes) -> Any:
    try:
        return shorten(json.loads(raw))
    except ValueError:
        return shorten(raw)


def describe(message: AbstractIncomingMessage, full: bool = False) -> DeadLetter:
    """What ops need to know about one dead-lettered message (our headers, or RabbitMQ's ``x-death``);
    ``full`` adds its headers and body."""
    headers: dict[str, Any] = dict(message.headers or {})
    try:
        body = json.loads(message.body)
        data = body.get("data") if isinstance(body, dict) else {}
    except ValueError:
        body, data = {}, {}
    data = data if isinstance(data, dict) else {}
    deaths = headers.get(DEATH_HEADER) or []
    death_times = [t for d in deaths if isinstance(d, dict) and (t := _parse_time(d.get("time"))) is not None]
    reason = next((str(d.get("reason")) for d in deaths if isinstance(d, dict)), None)
    first = _parse_time(headers.get(FIRST_ATTEMPT_HEADER)) or (min(death_times) if death_times else None)
    last = _parse_time(headers.get(DEAD_LETTERED_AT_HEADER)) or (max(death_times) if death_times else None)
    return DeadLetter(
        message_id=message.message_id,
        command_type=message.type or (body.get("type") if isinstance(body, dict) else None),
        tenant_id=str(data["tenant_id"]) if "tenant_id" in data else None,
        document_id=str(data["document_id"]) if "document_id" in data else None,
        error_code=str(headers.get(ERROR_CODE_HEADER) or (f"broker_{reason}" if reason else "")) or None,
        error_message=str(headers[ERROR_MESSAGE_HEADER]) if ERROR_MESSAGE_HEADER in headers else None,
        attempts=int(headers.get(ATTEMPT_HEADER, 1)),
        first_death=first,
        last_death=last,
        replays=int(headers.get(REPLAY_HEADER, 0)),
        headers=shorten(headers) if full else None,
        body=_full_body(message.body) if full else None,
    )


class DeadLetterQueue:
    def __init__(self, channel: AbstractChannel, settings: Settings, progress: Progress | None = None) -> None:
        self._channel = channel
        self._settings = settings
        self._progress = progress or _Silent()

    async def _take_all(self, scan_limit: int) -> list[AbstractIncomingMessage]:
        """Holds up to ``scan_limit`` messages unacked, so none is seen twice while we decide."""
        queue = await self._channel.declare_queue(self._settings.dead_letter_queue, passive=True)
        waiting = queue.declaration_result.message_count
        self._progress.start("scanning", min(waiting, scan_limit) if waiting is not None else None)
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < scan_limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
            taken.append(message)
            self._progress.advance()
        return taken

    @staticmethod
    async def _give_back(messages: Sequence[AbstractIncomingMessage]) -> None:
        for message in messages:
            await message.nack(requeue=True)

    @staticmethod
    def _partition(
        taken: Sequence[AbstractIncomingMessage], selection: Selection, limit: int | None = None, full: bool = False
    ) -> tuple[list[tuple[AbstractIncomingMessage, DeadLetter]], list[AbstractIncomingMessage]]:
        """(selected messages with their description, the rest), at most ``limit`` selected."""
        now = dt.datetime.now(dt.UTC)
        chosen: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        rest: list[AbstractIncomingMessage] = []
        for message in taken:
            letter = describe(message, full)
            if selection.matches(letter, now) and (limit is None or len(chosen) < limit):
                chosen.append((message, letter))
            else:
                rest.append(message)
        return chosen, rest

    async def inspect(self, selection: Selection, scan_limit: int = 10_000, full: bool = False) -> list[DeadLetter]:
        """The selected dead letters (``full``: with headers and body); the queue is left as it was."""
        taken = await self._take_all(scan_limit)
        try:
            return [letter for _, letter in self._partition(taken, selection, full=full)[0]]
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
        replayed: list[DeadLetter] = []
        self._progress.start("replaying", len(chosen))
        try:
            for message, letter in chosen:
                exchange_name, key = _original_destination(message, letter, self._settings.command_exchange)
                exchange = await self._channel.get_exchange(exchange_name, ensure=False)
                copy = _replay_copy(message)
                await publish_until_confirmed(  # resent if a lost connection took the confirm
                    functools.partial(exchange.publish, copy, routing_key=key, mandatory=True),
                    what="dead-letter replay",
                    still_wanted=functools.partial(still_held, message),  # else it stays in the DLQ
                    channel=self._channel,
                )
                await message.ack()  # only now: the copy is safely with the broker
                replayed.append(letter)
                self._progress.advance(letter)
                if rate_per_s:
                    await asyncio.sleep(1 / rate_per_s)
        finally:
            await self._give_back([m for m, _ in chosen[len(replayed) :]] + rest)
        return replayed

    async def purge(self, selection: Selection, *, dry_run: bool = False, scan_limit: int = 10_000) -> list[DeadLetter]:
        """Drops the selected dead letters for good (``dry_run``: only says which); returns them."""
        taken = await self._take_all(scan_limit)
        chosen, keep = self._partition(taken, selection)
        if dry_run:
            await self._give_back(taken)
            return [letter for _, letter in chosen]
        self._progress.start("purging", len(chosen))
        try:
            for message, letter in chosen:
                await message.ack()
                self._progress.advance(letter)
        finally:
            await self._give_back(keep)
        return [letter for _, letter in chosen]


def still_held(message: AbstractIncomingMessage) -> bool:
    return not delivery_lost(message)


def _original_destination(message: AbstractIncomingMessage, letter: DeadLetter, prefix: str) -> tuple[str, str]:
    """Where the command was first published: our dead-letter headers say so, RabbitMQ's ``x-death`` says so
    for what it dead-lettered itself, else the body's type, tenant and document decide."""
    headers = message.headers or {}
    exchange, key = headers.get(ORIGINAL_EXCHANGE_HEADER), headers.get(ORIGINAL_ROUTING_KEY_HEADER)
    if isinstance(exchange, str) and exchange and isinstance(key, str):
        return exchange, key
    deaths = headers.get(DEATH_HEADER)
    first = deaths[-1] if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict) else {}
    death_exchange, keys = first.get("exchange"), first.get("routing-keys")
    if isinstance(death_exchange, str) and death_exchange and isinstance(keys, list) and keys:
        return death_exchange, str(keys[0])
    if letter.command_type and letter.tenant_id and letter.document_id:
        tenant, document = uuid.UUID(letter.tenant_id), uuid.UUID(letter.document_id)
        return command_destination(prefix, letter.command_type, tenant, document)
    raise ValueError(f"cannot tell where dead letter {letter.message_id} was published; purge or fix it by hand")


def _replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers: dict[str, Any] = {k: v for k, v in (message.headers or {}).items() if k not in _STRIPPED_ON_REPLAY}
    headers[REPLAY_HEADER] = int(headers.get(REPLAY_HEADER, 0)) + 1
    return persistent_copy(message, headers)
