"""Spreads the shard queues over the live replicas, and hands a shard over without breaking its order.

Replicas announce themselves on a fanout exchange every ``heartbeat_s`` with the shards they hold. Each
replica computes the same owners from the live members (``balanced_owners``: every replica holds the floor
or the ceiling of shards/replicas, and few shards move when one comes or goes), claims the shards it should
own in its heartbeat, subscribes to one a round later if no other live replica holds it and no lower-named
replica claims it too, and releases the others: it cancels the subscription,
waits for its in-flight messages from that shard to finish, and only then stops announcing it. So a shard's
next owner starts after the previous one is done. Shard queues also have a single active consumer, the
safety net for moments when two replicas' views of the membership disagree.

When the broker connection is lost the replica stops rebalancing (its view of the others goes stale) and
its subscriptions are gone with the connection. Once reconnected (to any node), it keeps its shards if it was
away for less than 3 heartbeats, so nobody can have counted it out (that takes 3.5); otherwise it releases
them, draining as usual, since another replica may already hold them. Either way it then listens for two
heartbeats (``listen_heartbeats``) before taking anything, as at start-up.

RabbitMQ 4.1.2 and later could do the balancing natively (single active consumer on quorum queues honours
consumer priorities there); 3.10 to 4.0 cannot, hence this protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


def balanced_owners(
    shard_count: int, members: Collection[str], holds: Mapping[str, Collection[int]] | None = None
) -> dict[int, str]:
    """Every shard's owner: each member gets the floor or the ceiling of shards/members, and a change of
    members moves as few shards as that allows.

    Members keep what they hold now (``holds``, as announced), up to their share: so when a member leaves
    only its shards move, and when one joins only as many as it should get. Shards nobody keeps go by
    highest random weight (every (shard, member) pair has a hash weight; the heaviest pairs win while the
    member has room), so a fresh start spreads evenly too. Every member computes the same from the same view.
    """
    ordered = sorted(members)
    if not ordered:
        return {}
    holds = holds or {}
    current: dict[int, str] = {}
    for member in ordered:
        for shard in sorted(holds.get(member, ())):
            if 0 <= shard < shard_count:
                current.setdefault(shard, member)
    held = Counter(current.values())
    base, extra = divmod(shard_count, len(ordered))
    # The ceiling goes to those holding most already (then by weight), so nobody gives up a shard in vain.
    by_claim = sorted(ordered, key=lambda m: (-held[m], -_weight(m, -1), m))
    room = {member: base + (1 if i < extra else 0) for i, member in enumerate(by_claim)}
    owners: dict[int, str] = {}
    for member in ordered:
        mine = sorted((s for s, o in current.items() if o == member), key=lambda s: -_weight(member, s))
        for shard in mine[: room[member]]:
            owners[shard] = member
        room[member] -= min(len(mine), room[member])
    pairs = sorted(
        ((shard, member) for shard in range(shard_count) if shard not in owners for member in ordered),
        key=lambda pair: (_weight(pair[1], pair[0]), pair[1], pair[0]),
        reverse=True,
    )
    for shard, member in pairs:
        if shard not in owners and room[member] > 0:
            owners[shard] = member
            room[member] -= 1
    return owners


def balance_work(owners: Mapping[int, str], backlog: Mapping[int, int], low_water: int) -> dict[int, str]:
    """The same shard counts per member, with a busy shard swapped for an idle one when a member is about
    to run dry (fewer than ``low_water`` queued commands in its shards) while another has more than twice
    that; each swap must narrow the gap between them by ``low_water`` or more.

    One tenant's documents use few queues, so which replica happens to hold them decides how the work
    splits: without this, a replica holding little of a burst sits idle while another works through most
    of it. A replica with enough queued work runs at its in-flight limit however deep its backlog is, so
    nothing moves while everyone has enough: a swap costs a drain and a handover. Swapping (rather than
    moving) keeps every member at the floor or the ceiling of shards/members.
    """
    result = dict(owners)
    members = sorted(set(result.values()))
    for _ in range(len(result)):
        work = dict.fromkeys(members, 0)
        for shard, member in result.items():
            work[member] += backlog.get(shard, 0)
        heavy = max(members, key=lambda m: (work[m], m))
        light = min(members, key=lambda m: (work[m], m))
        gap = work[heavy] - work[light]
        if work[light] >= low_water or gap <= 2 * low_water:
            break
        swaps = [
            (abs(gap - 2 * (backlog.get(s, 0) - backlog.get(t, 0))), s, t)
            for s in sorted(s for s, m in result.items() if m == heavy)
            for t in sorted(t for t, m in result.items() if m == light)
            if backlog.get(s, 0) > backlog.get(t, 0)
        ]
        if not swaps:
            break
        new_gap, busy, idle = min(swaps)
        if gap - new_gap < low_water:
            break
        result[busy], result[idle] = light, heavy
    return result


def shard_ranges(shards: Collection[int]) -> str:
    """Shard numbers for a log line, runs folded: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    runs: list[list[int]] = []
    for shard in sorted(set(shards)):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _weight(member: str, shard: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}:{shard}".encode(), digest_size=8).digest(), "big")


@dataclass
class _Member:
    last_seen: float
    holds: set[int] = field(default_factory=set)
    claims: set[int] = field(default_factory=set)
    backlog: dict[int, int] = field(default_factory=dict)  # ready commands in the shards it holds


class ShardAssigner:
    def __init__(
        self,
        channel: AbstractChannel,
        exchange_name: str,
        shard_count: int,
        take: Callable[[int], Awaitable[None]],
        release: Callable[[int], Awaitable[None]],
        in_flight: Callable[[int], int],
        heartbeat_s: float = 1.0,
        listen_heartbeats: float = 2.0,
        backlog: Callable[[], Mapping[int, int]] | None = None,
        work_low_water: int | None = None,
        heard: Callable[[], None] | None = None,
        running: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.me = uuid.uuid4().hex
        self._heard = heard  # every heartbeat that came through the broker, our own too (the lease)
        self._channel = channel
        self._exchange_name = exchange_name
        self._shard_count = shard_count
        self._take = take
        self._release_shard = release
        self._in_flight = in_flight
        self._heartbeat_s = heartbeat_s
        self._listen_s = heartbeat_s * listen_heartbeats  # before taking anything, at start and after a reconnect
        self._members: dict[str, _Member] = {}
        self._subscribed: set[int] = set()
        self._claims: dict[int, float] = {}  # shard -> when we first announced we want it
        self._backlog = backlog  # ready commands per shard, as last seen
        self._work_low_water = work_low_water  # None: balance shard counts only
        self._running = running  # commands running per tenant: announced for the console, not used here
        self._announced_backlog: dict[int, int] = {}
        self._draining: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._started = time.monotonic()
        self._leaving = False
        self._changing = asyncio.Lock()  # rebalancing and shutdown never change subscriptions at once
        self._connected = True
        self._last_announced = time.monotonic()
        self._resuming: asyncio.Task[None] | None = None

    @property
    def holds(self) -> set[int]:
        return self._subscribed | self._draining

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
        await cancel_and_wait(task for task in (self._task, self._resuming) if task is not None)
        self._draining.clear()
        try:
            await self._announce(leaving=True)
        except Exception as exc:  # broker gone: the others notice the missing heartbeat instead
            log.info("goodbye_not_sent", error=repr(exc))

    def connection_lost(self) -> None:
        """The broker connection is gone: stop rebalancing until ``connection_restored``."""
        self._connected = False

    def connection_restored(self) -> None:
        """The connection is back (its channels and consumers restored): see the module docstring."""
        if self._resuming is None or self._resuming.done():
            self._resuming = asyncio.create_task(self._resume(), name="shard-assigner-resume")

    async def _resume(self) -> None:
        absent_s = time.monotonic() - self._last_announced
        async with self._changing:
            self._connected = True
            if absent_s >= self._heartbeat_s * 3 and not self._leaving:
                for shard in sorted(self._subscribed):
                    await self._release(shard)
            log.info("shard_assigner_resumed", absent_s=round(absent_s, 2), holds=sorted(self.holds))
            self._members.clear()
            self._started = time.monotonic()  # listen before taking anything, as at start-up
        try:
            await self._announce()
        except Exception as exc:  # the loop announces again next round
            log.info("announce_after_reconnect_failed", error=repr(exc))

    async def _on_heartbeat(self, message: AbstractIncomingMessage) -> None:
        if self._heard is not None:
            self._heard()
        try:
            beat = json.loads(message.body)
            member, holds, leaving = str(beat["member"]), {int(s) for s in beat["holds"]}, bool(beat.get("leaving"))
            claims = {int(s) for s in beat.get("claims", [])}
            backlog = {int(s): max(0, int(n)) for s, n in beat.get("backlog", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if member == self.me:
            return
        if leaving:
            self._members.pop(member, None)
        else:
            self._members[member] = _Member(time.monotonic(), holds, claims, backlog)

    async def _announce(self, leaving: bool = False) -> None:
        if self._exchange is None:
            return
        # Shards still draining count too: their queued commands have not gone anywhere.
        known = self._backlog() if self._backlog else {}
        self._announced_backlog = {shard: n for shard, n in known.items() if shard in self.holds}
        beat = {
            "member": self.me,
            "holds": sorted(self.holds),
            "claims": sorted(self._claims),
            "backlog": {str(s): n for s, n in sorted(self._announced_backlog.items())},
            "leaving": leaving,
        }
        if self._running is not None:
            beat["running"] = dict(self._running())
        body = json.dumps(beat).encode()
        await self._exchange.publish(aio_pika.Message(body=body, expiration=self._heartbeat_s * 3), routing_key="")
        if self._connected:
            self._last_announced = time.monotonic()

    async def _loop(self) -> None:
        while True:
            try:
                await self.rebalance()
                await self._announce()  # right away: the others see new holds and claims this round
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: the robust connection recovers; try next round
                log.warning("shard_assignment_round_failed", error=repr(exc))
            await asyncio.sleep(self._heartbeat_s)

    async def rebalance(self) -> None:
        async with self._changing:
            await self._rebalance()

    async def _rebalance(self) -> None:
        if not self._connected:
            return  # our view of the others is stale and our subscriptions are gone: wait for the reconnect
        now = time.monotonic()
        expiry = self._heartbeat_s * 3.5
        self._members = {m: info for m, info in self._members.items() if now - info.last_seen < expiry}
        if now - self._started < self._listen_s:
            return  # learn who else is here before taking anything
        holds = {member: info.holds for member, info in self._members.items()} | {self.me: self.holds}
        owners = balanced_owners(self._shard_count, {*self._members, self.me}, holds)
        if self._work_low_water is not None:
            # Everyone balances from the same numbers: what each member last announced.
            backlog = dict(self._announced_backlog)
            for info in self._members.values():
                backlog.update(info.backlog)
            owners = balance_work(owners, backlog, self._work_low_water)
        wanted = set() if self._leaving else {shard for shard, owner in owners.items() if owner == self.me}
        held_elsewhere = set().union(*(info.holds for info in self._members.values()))
        self._claims = {shard: at for shard, at in self._claims.items() if shard in wanted}
        ready = []
        for shard in sorted(wanted - self.holds):
            # Claim first, take a round later: two replicas whose views differ for a moment never both
            # take a shard (the lower member id wins a tie), and nobody takes one still held elsewhere.
            claimed_at = self._claims.setdefault(shard, now)
            rivals = {m for m, info in self._members.items() if shard in info.claims and m < self.me}
            if shard in held_elsewhere or rivals or now - claimed_at < self._heartbeat_s:
                continue
            ready.append(shard)
        # All at once: each take opens a channel and declares a queue, a round trip apiece (128 of them
        # one after the other kept a starting replica from its last shards for 3 s).
        outcomes = await asyncio.gather(*(self._take(shard) for shard in ready), return_exceptions=True)
        taken = []
        for shard, outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("shard_take_failed", shard=shard, error=repr(outcome))  # claimed still: next round
                continue
            self._subscribed.add(shard)
            del self._claims[shard]
            taken.append(shard)
        released = sorted(self._subscribed - wanted)
        for shard in released:
            await self._release(shard)
        # One line per round, not per shard (a replica starting alone takes all 128 at once).
        members = len(self._members) + 1
        if taken:
            log.info("shards_taken", shards=shard_ranges(taken), holding=len(self._subscribed), members=members)
        if released:
            log.info("shards_released", shards=shard_ranges(released), holding=len(self._subscribed), members=members)
        for shard in list(self._draining):
            if self._in_flight(shard) == 0:
                self._draining.discard(shard)

    async def _release(self, shard: int) -> None:
        """Stop receiving from the shard; it stays announced as held until its in-flight work is done."""
        self._subscribed.discard(shard)
        self._draining.add(shard)
        await self._release_shard(shard)
