"""Spreads the shard queues over the live replicas, and hands a shard over without breaking its order.

Replicas announce themselves on a fanout exchange every ``heartbeat_s`` with the shards they hold. Each
replica computes the same owner for every shard from the live members (rendezvous hashing), subscribes to
the shards it should own once no other live replica holds them, and releases the others: it cancels the
subscription, waits for its in-flight messages from that shard to finish, and only then stops announcing
it. So a shard's next owner starts after the previous one is done. Shard queues also have a single active
consumer, the safety net for moments when two replicas' views of the membership disagree.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

log = structlog.get_logger(__name__)


def owner_of(shard: int, members: Collection[str]) -> str:
    """Highest-random-weight owner: every replica computes the same, and few shards move on a change."""

    def weight(member: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{member}:{shard}".encode(), digest_size=8).digest(), "big")

    return max(sorted(members), key=weight)


def preferred_shards(me: str, members: Collection[str], shard_count: int) -> set[int]:
    return {shard for shard in range(shard_count) if owner_of(shard, {*members, me}) == me}


@dataclass
class _Member:
    last_seen: float
    holds: set[int] = field(default_factory=set)


class ShardAssigner:
    def __init__(
        self,
        channel: AbstractChannel,
        exchange_name: str,
        shard_queues: list[AbstractQueue],
        on_message: Callable[[AbstractIncomingMessage], Awaitable[None]],
        in_flight_from: Callable[[str], int],
        heartbeat_s: float = 1.0,
    ) -> None:
        self.me = uuid.uuid4().hex
        self._channel = channel
        self._exchange_name = exchange_name
        self._queues = shard_queues
        self._on_message = on_message
        self._in_flight_from = in_flight_from
        self._heartbeat_s = heartbeat_s
        self._members: dict[str, _Member] = {}
        self._subscribed: dict[int, str] = {}  # shard -> consumer tag
        self._draining: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._started = time.monotonic()
        self._leaving = False
        self._changing = asyncio.Lock()  # rebalancing and shutdown never change subscriptions at once

    @property
    def holds(self) -> set[int]:
        return set(self._subscribed) | self._draining

    async def start(self) -> None:
        self._exchange = await self._channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True
        )
        inbox = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await inbox.bind(self._exchange)
        await inbox.consume(self._on_heartbeat, no_ack=True)
        self._task = asyncio.create_task(self._loop(), name="shard-assigner")

    async def release_all(self) -> None:
        """For shutdown: take nothing more, cancel every subscription, keep announcing what still drains."""
        async with self._changing:
            self._leaving = True
            for shard in list(self._subscribed):
                await self._release(shard)

    async def stop(self) -> None:
        """After the worker drained its in-flight work: stop heartbeats and say goodbye."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._draining.clear()
        try:
            await self._announce(leaving=True)
        except Exception as exc:  # broker gone: the others notice the missing heartbeat instead
            log.info("goodbye_not_sent", error=repr(exc))

    async def _on_heartbeat(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = json.loads(message.body)
            member, holds, leaving = str(beat["member"]), {int(s) for s in beat["holds"]}, bool(beat.get("leaving"))
        except (ValueError, KeyError, TypeError):
            return
        if member == self.me:
            return
        if leaving:
            self._members.pop(member, None)
        else:
            self._members[member] = _Member(time.monotonic(), holds)

    async def _announce(self, leaving: bool = False) -> None:
        if self._exchange is None:
            return
        body = json.dumps({"member": self.me, "holds": sorted(self.holds), "leaving": leaving}).encode()
        await self._exchange.publish(aio_pika.Message(body=body, expiration=self._heartbeat_s * 3), routing_key="")

    async def _loop(self) -> None:
        while True:
            try:
                await self._announce()
                await self.rebalance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: the robust connection recovers; try next round
                log.warning("shard_assignment_round_failed", error=repr(exc))
            await asyncio.sleep(self._heartbeat_s)

    async def rebalance(self) -> None:
        async with self._changing:
            await self._rebalance()

    async def _rebalance(self) -> None:
        now = time.monotonic()
        expiry = self._heartbeat_s * 3.5
        self._members = {m: info for m, info in self._members.items() if now - info.last_seen < expiry}
        if now - self._started < self._heartbeat_s * 2:
            return  # learn who else is here before taking anything
        wanted = set() if self._leaving else preferred_shards(self.me, self._members, len(self._queues))
        held_elsewhere = set().union(*(info.holds for info in self._members.values()))
        for shard in sorted(wanted - self.holds - held_elsewhere):
            self._subscribed[shard] = await self._queues[shard].consume(self._on_message)
            log.info("shard_taken", shard=shard, members=len(self._members) + 1)
        for shard in sorted(set(self._subscribed) - wanted):
            await self._release(shard)
            log.info("shard_released", shard=shard, members=len(self._members) + 1)
        for shard in list(self._draining):
            if self._in_flight_from(self._queues[shard].name) == 0:
                self._draining.discard(shard)

    async def _release(self, shard: int) -> None:
        """Stop receiving from the shard; it stays announced as held until its in-flight work is done."""
        tag = self._subscribed.pop(shard)
        self._draining.add(shard)
        try:
            await self._queues[shard].cancel(tag)
        except Exception as exc:  # channel closed: the broker has dropped the subscription already
            log.info("shard_cancel_failed", shard=shard, error=repr(exc))
