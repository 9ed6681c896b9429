"""What the console hears from the broker: result events (the outcomes feed, document histories, rates) and
the replicas' heartbeats (the fleet).

Result events come through a ``ResultSubscription`` of its own (an exclusive queue bound to every result
routing key, as the CLI's ``results`` binds one), so the console takes nothing from anyone. It remembers the
last ``CONSOLE_EVENTS_KEPT`` events: the feed and a document's history cover what was published while the
console ran. Heartbeats come through an exclusive queue bound to the replicas' membership exchange, the one
they share shards through (``worker.intake.ownership``); a replica is shown until it misses 3.5 beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.amqp.names import members_exchange_name
from worker.results.following import EventFilter, ResultSubscription

log = structlog.get_logger(__name__)

BUCKET_S = 10
BUCKETS = 60  # ten minutes of rates


@dataclass(frozen=True)
class OutcomeFilter:
    """Which events the outcomes page shows (pure)."""

    kind: str | None = None  # upload | delete
    outcome: str | None = None  # succeeded | failed | retrying
    tenant_id: uuid.UUID | None = None
    document_id: uuid.UUID | None = None
    error_code: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        kind, _, outcome = str(event.get("type", "")).removeprefix("dms.").partition(".")
        if (self.kind and kind != self.kind) or (self.outcome and outcome != self.outcome):
            return False
        base = EventFilter(tenant_id=self.tenant_id, document_id=self.document_id)
        if not base.matches(event):
            return False
        if self.error_code:
            data = event.get("data")
            error = data.get("error") if isinstance(data, dict) else None
            return isinstance(error, dict) and error.get("code") == self.error_code
        return True


class ResultFeed:
    def __init__(self, kept: int, listeners: Iterable[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=kept)  # newest last
        self._listeners = list(listeners)
        self._rates: deque[tuple[int, dict[str, int]]] = deque(maxlen=BUCKETS)  # (bucket start, counts)
        self.since = dt.datetime.now(dt.UTC)

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def take(self, event: dict[str, Any], now: float | None = None) -> None:
        self.events.append(event)
        kind = str(event.get("type", ""))
        outcome = "uploads" if kind == "dms.upload.succeeded" else kind.rsplit(".", 1)[-1]
        bucket = int((time.time() if now is None else now) // BUCKET_S * BUCKET_S)
        if not self._rates or self._rates[-1][0] != bucket:
            self._rates.append((bucket, {}))
        counts = self._rates[-1][1]
        counts[outcome] = counts.get(outcome, 0) + 1
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:  # one listener's bug must not stop the feed
                log.warning("console_listener_failed", error=repr(exc))

    def latest(self, wanted: OutcomeFilter, count: int = 100) -> list[dict[str, Any]]:
        found = []
        for event in reversed(self.events):
            if wanted.matches(event):
                found.append(event)
                if len(found) >= count:
                    break
        return found

    def rates(self, now: float | None = None) -> list[tuple[int, float, float]]:
        """(bucket start, uploads written/s, commands failed/s) for each of the last ``BUCKETS`` buckets, oldest
        first (a delete's success counts in neither)."""
        end = int((time.time() if now is None else now) // BUCKET_S * BUCKET_S)
        by_start = dict(self._rates)
        series = []
        for start in range(end - (BUCKETS - 1) * BUCKET_S, end + 1, BUCKET_S):
            counts = by_start.get(start, {})
            series.append((start, counts.get("uploads", 0) / BUCKET_S, counts.get("failed", 0) / BUCKET_S))
        return series

    async def follow(self, channel: AbstractChannel, exchange: str) -> None:
        """Runs until cancelled."""
        subscription = await ResultSubscription.open(channel, exchange, EventFilter())
        async with contextlib.aclosing(subscription.events()) as events:
            async for event in events:
                self.take(event)


@dataclass
class Replica:
    member: str
    last_seen: float
    holds: list[int] = field(default_factory=list)
    backlog: dict[int, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)  # tenant -> commands running


class Fleet:
    def __init__(self, heartbeat_s: float) -> None:
        self._expiry_s = heartbeat_s * 3.5
        self._replicas: dict[str, Replica] = {}

    def replicas(self) -> list[Replica]:
        now = time.monotonic()
        self._replicas = {m: r for m, r in self._replicas.items() if now - r.last_seen < self._expiry_s}
        return sorted(self._replicas.values(), key=lambda r: r.member)

    def hear(self, body: bytes) -> None:
        try:
            beat = json.loads(body)
            member = str(beat["member"])
            if beat.get("leaving"):
                self._replicas.pop(member, None)
                return
            self._replicas[member] = Replica(
                member,
                time.monotonic(),
                sorted(int(s) for s in beat.get("holds", [])),
                {int(s): int(n) for s, n in beat.get("backlog", {}).items()},
                {str(t): int(n) for t, n in beat.get("running", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return

    def running_by_tenant(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for replica in self.replicas():
            for tenant, count in replica.running.items():
                total[tenant] = total.get(tenant, 0) + count
        return dict(sorted(total.items(), key=lambda item: -item[1]))

    def queue_depths(self) -> dict[int, int]:
        depths: dict[int, int] = {}
        for replica in self.replicas():
            depths.update(replica.backlog)
        return dict(sorted(depths.items()))

    async def follow(self, channel: AbstractChannel, command_queue: str) -> None:
        """Binds an exclusive queue to the membership exchange (declared as the replicas declare it)."""
        exchange = await channel.declare_exchange(
            members_exchange_name(command_queue), aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True
        )
        inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
        await inbox.bind(exchange)

        async def heard(message: AbstractIncomingMessage) -> None:
            self.hear(message.body)

        await inbox.consume(heard, no_ack=True)
        await asyncio.Future()  # until cancelled
