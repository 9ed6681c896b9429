"""Subscribes to the shard queues this replica holds, one channel each, and keeps each queue's prefetch at
its share of the replica's in-flight limit (the split itself is ``worker.intake.slots``).

RabbitMQ fixes a consumer's prefetch when it subscribes (a later ``basic.qos`` reaches only later
consumers), so a new share means subscribing again: cancel, let what the old subscription delivered be
settled, set the channel's prefetch, consume. The wait matters: if the replica died while two
subscriptions held messages, RabbitMQ would return each subscription's messages as a group, and the later
group could come back first. So one queue never has two subscriptions with unsettled messages, and a
share moves only where it pays (``worth_changing`` and ``share_moves``): a queue shrinks when another needs
the room and grows when it has more work than its share.

Every ``interval_s`` (and at once when a shard is taken) the replica reads the ready count of each held
queue (a passive declare; no message is touched) and re-splits. A share counts from the moment it is
decided and a shrinking queue's slots count as free only once its messages settle, so the deliveries a
replica holds never exceed its in-flight limit plus ``HEADROOM`` (one slot an idle queue that just got work
takes at once, rather than waiting for a busy queue to drain): memory is bounded by configuration, not by
the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from worker.amqp.routing import tenant_of_routing_key
from worker.intake.slots import ShardLoad, Subscription, prefetch_per_shard, share_moves

log = structlog.get_logger(__name__)

OnMessage = Callable[[AbstractIncomingMessage, int], Awaitable[None]]

HEADROOM = 1  # deliveries above the in-flight limit, for a queue that got work while every slot was taken
PROBE_CHANNELS = 4  # queue depths are read over this many channels at once (one request at a time each)


@dataclass
class _Shard:
    number: int
    queue: AbstractQueue
    channel: AbstractChannel
    owned: bool = False  # this replica holds the shard (ShardAssigner says so)
    tag: str | None = None  # the current subscription; None when not subscribed
    subscribed: int = 0  # prefetch of the current subscription
    prefetch: int = 0  # its share: what it is subscribed with, or will be once its re-subscription is done
    in_flight: int = 0
    waiting: int = 0
    tenant: str | None = None
    changing: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set while nothing is in flight

    def __post_init__(self) -> None:
        self.settled.set()


class ShardConsumers:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        queue_names: list[str],
        queue_arguments: dict[str, Any],
        on_message: OnMessage,
        in_flight_limit: int,
        interval_s: float = 0.25,
        tenant_weights: Mapping[str, float] | None = None,
        on_taken: Callable[[int], None] | None = None,
    ) -> None:
        self._connection = connection
        self._names = queue_names
        self._arguments = queue_arguments
        self._on_message = on_message
        self._limit = in_flight_limit
        self._interval_s = interval_s
        self._weights = dict(tenant_weights or {})
        self._on_taken = on_taken
        self._shards: dict[int, _Shard] = {}
        self._probes: list[AbstractChannel] = []
        self._task: asyncio.Task[None] | None = None
        self._resubscribing: set[asyncio.Task[None]] = set()
        self._look_soon = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def held(self) -> set[int]:
        return {n for n, shard in self._shards.items() if shard.owned}

    def in_flight(self, shard: int) -> int:
        known = self._shards.get(shard)
        return known.in_flight if known else 0

    def backlog(self) -> dict[int, int]:
        """Ready commands per shard, as last looked at while held (for balancing work between replicas)."""
        return {n: s.waiting for n, s in self._shards.items()}

    def loads(self) -> dict[int, ShardLoad]:
        return {n: ShardLoad(s.waiting, s.in_flight, s.tenant) for n, s in self._shards.items() if s.owned}

    async def start(self) -> None:
        self._probes = [await self._connection.channel() for _ in range(PROBE_CHANNELS)]
        self._task = asyncio.create_task(self._loop(), name="shard-slots")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Ends re-splitting without cutting a broker request short: aiormq closes a channel whose request
        is cancelled, and its robust channel would then be reopened under our feet. The loop ends at its next
        turn; a re-subscription waiting for its queue to settle gives up; one talking to the broker finishes.
        Only what is still running after ``timeout_s`` is cancelled."""
        self._stopping.set()
        self._look_soon.set()
        tasks = [t for t in (self._task, *self._resubscribing) if t is not None]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def take(self, number: int) -> None:
        shard = self._shards.get(number)
        if shard is None:
            channel = await self._connection.channel()
            try:
                queue = await channel.declare_queue(self._names[number], durable=True, arguments=self._arguments)
            except BaseException:
                with contextlib.suppress(Exception):  # the take is tried again next round, on a new channel
                    await channel.close()
                raise
            shard = self._shards[number] = _Shard(number, queue, channel)
        if self._on_taken is not None:
            self._on_taken(number)  # before the first delivery: what was known of its documents may be stale
        shard.owned = True
        self._look_soon.set()  # its share comes with the next split, right away

    async def release(self, number: int) -> None:
        shard = self._shards[number]
        shard.owned = False
        shard.prefetch = 0  # its slots come free as its in-flight messages settle
        async with shard.changing:
            tag, shard.tag, shard.subscribed = shard.tag, None, 0
            if tag is not None:
                try:
                    await shard.queue.cancel(tag)
                except Exception as exc:  # channel closed: the broker has dropped the subscription already
                    log.info("shard_cancel_failed", shard=number, error=repr(exc))

    async def _subscribe(self, shard: _Shard) -> None:
        """Brings the subscription in line with the shard's share (0: unsubscribed), whatever the share
        is by the time this runs."""
        async with shard.changing:
            if shard.tag is not None and shard.subscribed == shard.prefetch:
                return
            if shard.tag is not None:
                tag, shard.tag, shard.subscribed = shard.tag, None, 0
                await shard.queue.cancel(tag)
            # See the module docstring: never two subscriptions with unsettled messages.
            await _first_of(shard.settled, self._stopping)
            if not shard.owned or self._stopping.is_set():  # released or stopping meanwhile: stays unsubscribed
                return
            prefetch = shard.prefetch
            if prefetch:
                await shard.channel.set_qos(prefetch_count=prefetch)
                shard.tag = await shard.queue.consume(self._deliverer(shard))
                shard.subscribed = prefetch

    def _deliverer(self, shard: _Shard) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def deliver(message: AbstractIncomingMessage) -> None:
            # No await before on_message: it takes the document's lock in delivery order.
            shard.in_flight += 1
            shard.settled.clear()
            shard.tenant = tenant_of_routing_key(message.routing_key or "")
            try:
                await self._on_message(message, shard.number)
            finally:
                shard.in_flight -= 1
                if not shard.in_flight:
                    shard.settled.set()
                if shard.in_flight >= shard.prefetch:  # above its share (shrinking or given up): a slot came
                    self._look_soon.set()  # free for a queue waiting for one, which need not wait a whole interval

        return deliver

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that meets the event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._look_soon.wait()
            self._look_soon.clear()
            if self._stopping.is_set():
                return
            try:
                await self.resplit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: the robust connection recovers; try next round
                log.warning("slot_split_failed", error=repr(exc))

    async def resplit(self) -> None:
        """Reads the held queues' depths and moves each queue towards its share of the in-flight limit,
        shrinking first: a share only grows into slots that are free now (a shrinking queue's slots come
        free as its messages settle), so deliveries never exceed the limit plus ``HEADROOM``."""
        held = {n: s for n, s in self._shards.items() if s.owned}
        if not held or not self._probes:
            return
        underlays = [await probe.get_underlay_channel() for probe in self._probes]

        async def look(probe: int) -> None:
            for shard in list(held.values())[probe :: len(underlays)]:
                with contextlib.suppress(Exception):  # a queue deleted under us: its consumer goes too
                    declared = await underlays[probe].queue_declare(shard.queue.name, passive=True)
                    shard.waiting = declared.message_count or 0

        await asyncio.gather(*(look(p) for p in range(len(underlays))))
        targets = prefetch_per_shard(self._limit, self.loads(), self._weights)
        queues = {
            n: Subscription(s.prefetch, s.in_flight, s.waiting if s.owned else 0, s.changing.locked() or not s.owned)
            for n, s in self._shards.items()
        }
        if self._stopping.is_set():
            return
        for number, prefetch in share_moves(self._limit, queues, targets, HEADROOM).items():
            self._resubscribe(self._shards[number], prefetch)  # may have been taken during the look

    def _resubscribe(self, shard: _Shard, prefetch: int) -> None:
        shard.prefetch = prefetch  # the share counts from now: no slot is handed out twice
        # Each queue drains on its own: a slow one must not hold up the others' new shares.
        task = asyncio.create_task(self._subscribe(shard), name=f"resubscribe-{shard.number}")
        self._resubscribing.add(task)
        task.add_done_callback(self._resubscribing.discard)


async def _first_of(*events: asyncio.Event) -> None:
    """Returns once any of the events is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
