"""Dead-letter queue tooling for ops: list, show, replay (with filters, dry run, limit, rate, stop) and purge.
The CLI (``dlq``) and the console both use it.

Replay never loses a message: the copy is published to the command exchange with publisher confirms
first, and only then is the original acked from the DLQ. Messages not selected are handed back. A
``Progress`` hears of every message scanned and every one replayed or purged, as it happens. The DLQ is
read one message at a time (``DeadLetterQueue``): however deep it is, one body at a time is in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

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
from worker.settings import TopologySettings

_STRIPPED_ON_REPLAY = {*WORKER_ONLY_HEADERS, *BROKER_DEATH_HEADERS}


@dataclass(frozen=True, slots=True)  # slots: the console keeps one per dead letter in its index
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
        row = asdict(self)
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


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def age_seconds(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds (pure; ``ValueError`` for anything else)."""
    text = text.strip()
    number, unit = (text[:-1], AGE_UNITS[text[-1]]) if text and text[-1] in AGE_UNITS else (text, 1)
    value = float(number) * unit
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not an age like 90s, 15m, 2h or 1d")
    return value


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation touches; every given criterion must match (pure)."""

    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error_code: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None
    message_id: str | None = None
    message_ids: frozenset[str] | None = None  # a picked set (the console's check boxes)
    except_ids: frozenset[str] | None = None  # done already (a job's later passes)
    command_type: str | None = None  # dms.upload | dms.delete
    text: str | None = None  # in the error message, ignoring case

    def selects_everything(self) -> bool:
        return self == Selection()

    def matches(self, letter: DeadLetter, now: dt.datetime) -> bool:
        if self.message_id and letter.message_id != self.message_id:
            return False
        if self.message_ids is not None and letter.message_id not in self.message_ids:
            return False
        if self.except_ids and letter.message_id in self.except_ids:
            return False
        if self.tenant_id and letter.tenant_id != str(self.tenant_id):
            return False
        if self.document_id and letter.document_id != str(self.document_id):
            return False
        if self.error_code and letter.error_code != self.error_code:
            return False
        if self.command_type and letter.command_type != self.command_type:
            return False
        if self.text and self.text.casefold() not in (letter.error_message or "").casefold():
            return False
        age = (now - letter.last_death).total_seconds() if letter.last_death else None
        if self.older_than_s is not None and (age is None or age < self.older_than_s):
            return False
        return not (self.newer_than_s is not None and (age is None or age > self.newer_than_s))

    def as_filter(self) -> dict[str, Any]:
        """The criteria given, JSON-ready (for audit lines and job history)."""
        shown: dict[str, Any] = {}
        for key, value in vars(self).items():
            if value is None:
                continue
            shown[key] = sorted(value) if isinstance(value, Collection) and not isinstance(value, str) else value
            if isinstance(value, uuid.UUID):
                shown[key] = str(value)
        return shown


def intern(value: str | None) -> str | None:
    """The one copy of a string that repeats across dead letters (a tenant, an error code, a type)."""
    return sys.intern(value) if value is not None else None


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
    command_type = message.type or (body.get("type") if isinstance(body, dict) else None)
    return DeadLetter(
        message_id=message.message_id,
        command_type=intern(str(command_type)) if command_type else None,
        tenant_id=intern(str(data["tenant_id"])) if "tenant_id" in data else None,
        document_id=str(data["document_id"]) if "document_id" in data else None,
        error_code=intern(str(headers.get(ERROR_CODE_HEADER) or (f"broker_{reason}" if reason else "")) or None),
        error_message=str(headers[ERROR_MESSAGE_HEADER]) if ERROR_MESSAGE_HEADER in headers else None,
        attempts=int(headers.get(ATTEMPT_HEADER, 1)),
        first_death=first,
        last_death=last,
        replays=int(headers.get(REPLAY_HEADER, 0)),
        headers=shorten(headers) if full else None,
        body=_full_body(message.body) if full else None,
    )


class DeadLetterQueue:
    """The DLQ, read one message at a time: never more than one body in memory, whatever its depth.

    A pass takes messages with ``basic.get`` on a channel of its own and holds the ones it does not settle
    unacked (so none is seen twice); closing that channel at the end hands them all back to the head of
    the queue in their order (RabbitMQ returns a closed channel's deliveries sorted, ahead of anything
    ready). Only their descriptions stay in memory, and only as long as the caller keeps them.
    """

    def __init__(
        self, connection: AbstractConnection, settings: TopologySettings, progress: Progress | None = None
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._progress = progress or _Silent()

    async def depth(self) -> int:
        """Messages ready in the DLQ (a passive declare: one round trip, nothing read). Those another scan
        holds right now are not counted."""
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self._settings.dead_letter_queue, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    @contextlib.asynccontextmanager
    async def _pass(self, stage: str, scan_limit: int) -> AsyncIterator[AsyncIterator[AbstractIncomingMessage]]:
        """The messages in the DLQ now, up to ``scan_limit``, one at a time; what the caller leaves unsettled
        goes back at the end, in order.

        A pass always reads to the end of what was there, also when the caller stops early: the broker
        queues a returned delivery behind returned ones not yet delivered again, so handing back the first
        part of the queue while earlier returns still wait would rotate the queue, and a later replay would
        republish a document's commands out of order.
        """
        channel = await self._connection.channel()
        queue = await channel.declare_queue(self._settings.dead_letter_queue, passive=True)
        waiting = queue.declaration_result.message_count or 0
        count = min(waiting, scan_limit)  # only what is there now: a replayed command failing again lands behind
        self._progress.start(stage, count)
        read = settled = 0

        async def messages() -> AsyncIterator[AbstractIncomingMessage]:
            nonlocal read, settled
            while read < count:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    return
                read += 1
                yield message
                settled += message.processed  # acked by the caller

        completed = False
        try:
            yield messages()
            while read < count and await queue.get(no_ack=False, fail=False) is not None:
                read += 1  # held, unread: the rest of the pass
            completed = True
        finally:
            await channel.close()  # hands back every message still held, in order, to the head of the queue
            if completed:
                await self._returned(waiting - settled)

    async def _returned(self, at_least: int, within_s: float = 10.0) -> None:
        """The broker takes a closed channel's deliveries back after it confirmed the close: until it has,
        the next pass would read later messages before them. Waits until the DLQ is that deep again."""
        for _ in range(round(within_s / 0.01)):
            if await self.depth() >= at_least:
                return
            await asyncio.sleep(0.01)

    async def each(
        self, selection: Selection, scan_limit: int = 10_000, full: bool = False, first: int | None = None
    ) -> AsyncIterator[DeadLetter]:
        """The selected dead letters as the scan finds them (``full``: with headers and body), at most
        ``first`` of them; the queue is left as it was once the caller has read to the end (breaking out
        early leaves the pass holding its messages until the generator is collected)."""
        now = dt.datetime.now(dt.UTC)
        found = 0
        async with self._pass("scanning", scan_limit) as messages:
            async for message in messages:
                letter = describe(message, full)
                self._progress.advance()
                if selection.matches(letter, now):
                    yield letter
                    found += 1
                    if first is not None and found >= first:
                        return

    async def inspect(self, selection: Selection, scan_limit: int = 10_000, full: bool = False) -> list[DeadLetter]:
        """The selected dead letters (``full``: with headers and body); the queue is left as it was."""
        return [letter async for letter in self.each(selection, scan_limit, full)]

    async def find(self, message_id: str, scan_limit: int = 10_000) -> DeadLetter | None:
        """One dead letter in full (the pass describes no other, but reads to the end like any pass)."""
        found = None
        # Read to the end, not returned from inside: a generator left suspended would finish its pass
        # (hand back, in order) only when collected, after the caller went on.
        async for letter in self.each(Selection(message_id=message_id), scan_limit, full=True, first=1):
            found = letter
        return found

    async def replay(
        self,
        selection: Selection,
        *,
        dry_run: bool = False,
        limit: int | None = None,
        rate_per_s: float | None = None,
        scan_limit: int = 10_000,
        stop: Callable[[], bool] | None = None,
    ) -> list[DeadLetter]:
        """Republishes the selected dead letters to where they were first published, in DLQ order, each
        confirmed by the broker before it is acked from the DLQ; at most ``limit`` of them, at most
        ``rate_per_s`` a second, until ``stop()`` says so. Returns the ones replayed (``dry_run``: would be)."""
        if dry_run:
            return (await self.inspect(selection, scan_limit))[:limit]
        publisher = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        pace = _Pace(rate_per_s)
        replayed: list[DeadLetter] = []
        now = dt.datetime.now(dt.UTC)
        try:
            async with self._pass("replaying", scan_limit) as messages:
                async for message in messages:
                    if (limit is not None and len(replayed) >= limit) or (stop is not None and stop()):
                        break
                    letter = describe(message)
                    if not selection.matches(letter, now):
                        self._progress.advance()
                        continue  # held, and handed back when the pass ends
                    await pace.wait()
                    await self._republish(publisher, message, letter)
                    await message.ack()  # only now: the copy is safely with the broker
                    replayed.append(letter)
                    self._progress.advance(letter)
        finally:
            await publisher.close()
        return replayed

    async def _republish(
        self, publisher: AbstractChannel, message: AbstractIncomingMessage, letter: DeadLetter
    ) -> None:
        exchange_name, key = _original_destination(message, letter, self._settings.command_exchange)
        exchange = await publisher.get_exchange(exchange_name, ensure=False)
        copy = _replay_copy(message)
        await publish_until_confirmed(  # resent if a lost connection took the confirm
            functools.partial(exchange.publish, copy, routing_key=key, mandatory=True),
            what="dead-letter replay",
            still_wanted=functools.partial(still_held, message),  # else it stays in the DLQ
            channel=publisher,
        )

    async def purge(
        self,
        selection: Selection,
        *,
        dry_run: bool = False,
        scan_limit: int = 10_000,
        limit: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[DeadLetter]:
        """Drops the selected dead letters for good, at most ``limit`` (``dry_run``: only says which)."""
        if dry_run:
            return (await self.inspect(selection, scan_limit))[:limit]
        purged: list[DeadLetter] = []
        now = dt.datetime.now(dt.UTC)
        async with self._pass("purging", scan_limit) as messages:
            async for message in messages:
                if (limit is not None and len(purged) >= limit) or (stop is not None and stop()):
                    break
                letter = describe(message)
                if selection.matches(letter, now):
                    await message.ack()
                    purged.append(letter)
                    self._progress.advance(letter)
                else:
                    self._progress.advance()
        return purged


class _Pace:
    """At most ``rate_per_s`` a second, evenly spaced (none: as fast as the broker confirms)."""

    def __init__(self, rate_per_s: float | None) -> None:
        self._interval = 1 / rate_per_s if rate_per_s else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval


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
