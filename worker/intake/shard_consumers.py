"""Subscribes to the shard queues this replica holds, one channel each with a fixed prefetch (READ_AHEAD), hands
every delivery to the dispatcher, runs the commands it starts, and gives queues back without breaking order.

Order across a give-back rests on how quorum queues return unsettled deliveries (``rabbit_fifo`` in
RabbitMQ 3.10.8 and 4.0.5; the README's ordering section has the sources):

* when a channel closes (or its connection or process dies), every delivery it holds goes back to the
  *head* of the queue, ahead of the ready messages, sorted by the consumer's delivery order, but *behind*
  deliveries returned earlier and not yet delivered again;
* a single ``nack(requeue=True)`` puts one delivery at the back of those returns, and after ``basic.cancel``
  single active consumer makes the next waiting consumer active at once, while the cancelled one still
  holds its deliveries.

So this module never nacks one delivery and never cancels a subscription that holds any: a queue is given
back only by closing its channel, once the commands of it that started are done (or cancelled at the end
of a shutdown's grace); everything else of it is returned in one piece, in order. And every subscription
has the same prefetch, on every replica: the next holder then receives everything a dead holder returned
in one go (at most READ_AHEAD deliveries), so no delivery can be returned behind a later one of its queue.
Changing READ_AHEAD across a running fleet is safe upward only; lower it with the fleet stopped.

Memory: a replica holds at most READ_AHEAD deliveries per held queue, and past READ_AHEAD_BYTES held (running
commands included) it stops reading the connection its subscriptions use (``worker.amqp.read_gate``: TCP flow
control then holds the broker back; nothing is returned, nothing counts as a redelivery) until the bytes held
fall under half of that. So READ_AHEAD can be deep (how far a replica reaches past another tenant's backlog)
while the bodies held stay under READ_AHEAD_BYTES plus what one read brings in (the commands whose frames
were already in the socket's buffer, at most one of them partly). A pause lasts at most the gate's
``longest_s`` at a time: then one read lets the connection's heartbeats in, and the next delivery pauses it
again. ``dms_worker_read_ahead_reading_paused`` shows it, and a log line at each start and end.

Every ``poll_s`` the depth of each held queue is read (a passive declare) for balancing work between
replicas and for the gauges; it decides nothing here. A subscribed queue whose read-ahead is less than half
full is not asked: the broker fills a subscription's prefetch from whatever is ready, so such a queue has
nothing (or a few deliveries on their way) waiting, and it counts 0. Only the queues that may have a backlog
cost the broker a declare (128 of them every second was about 0.3 declares per upload at full speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from worker.amqp.acks import DelayedAcks
from worker.amqp.confirms import delivery_lost
from worker.amqp.read_gate import ReadGate
from worker.amqp.routing import tenant_of_routing_key
from worker.intake.consumer import Ending, Incoming, Park
from worker.intake.dispatcher import Dispatcher, Held
from worker.intake.envelope import issued_at
from worker.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

PROBE_CHANNELS = 4  # queue depths are read over this many channels at once (one request at a time each)
# What a held delivery costs besides its body (aio-pika's message, its headers, the parsed command, the
# dispatcher's entry): about 1.6 KB measured with 10,000 small commands held. Counted against
# READ_AHEAD_BYTES, so that a deep read-ahead of small commands is bounded too.
HELD_OVERHEAD_BYTES = 2048


class Subscription(Enum):
    SUBSCRIBED = "subscribed"
    CLOSING = "closing"  # given back: waits for its started commands, then closes its channel
    CLOSED = "closed"


class Runner(Protocol):
    """Reads a delivery once and runs its command (``worker.intake.consumer.CommandConsumer``)."""

    def read(self, message: AbstractIncomingMessage, shard: int | None = None) -> Incoming: ...

    async def run(self, incoming: Incoming, park: Park) -> Ending: ...


@dataclass(frozen=True)
class QueueDepth:
    waiting: int  # ready in the queue, as last polled
    tenant: str | None  # whose command it delivered last


@dataclass(eq=False)
class _Shard:
    number: int
    state: Subscription = Subscription.CLOSED
    channel: AbstractChannel | None = None
    owned: bool = False
    retake: bool = False  # subscribe again once closed (a give-back after a failed settle)
    waiting: int = 0
    tenant: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.closed.set()


class ShardConsumers:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        queue_names: list[str],
        queue_arguments: dict[str, Any],
        consumer: Runner,
        running_limit: Callable[[], int],
        read_ahead: int,
        read_ahead_bytes: int,
        gate: ReadGate,
        poll_s: float = 1.0,
        on_taken: Callable[[int], None] | None = None,
        tenant_weights: Mapping[str, float] | None = None,
        heard: Callable[[], None] | None = None,
        acks: DelayedAcks | None = None,
    ) -> None:
        """``connection`` carries the subscriptions and nothing else: ``gate`` (its transport factory) pauses
        its reads. ``heard()`` is called with every delivery: it came through the broker, so the replica still
        hears it (the lease, ``worker.intake.lease``; a burst of deliveries can hold the heartbeats up)."""
        self._connection = connection
        self._names = queue_names
        self._arguments = queue_arguments
        self._consumer = consumer
        self.dispatcher: Dispatcher[Incoming] = Dispatcher(
            self._start, running_limit, tenant_weights, lambda incoming: delivery_lost(incoming.message)
        )
        self._read_ahead = read_ahead
        self._read_ahead_bytes = read_ahead_bytes
        self._gate = gate
        self._over_budget = False
        self._poll_s = poll_s
        self._on_taken = on_taken
        self._heard = heard or (lambda: None)
        self._acks = acks  # the consumer's: acks still waiting are sent before a channel is closed
        self._shards: dict[int, _Shard] = {}
        self._probes: list[AbstractChannel] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # --- for the assigner and the gauges ----------------------------------------------------------

    def in_flight(self, shard: int) -> int:
        """Nonzero while the shard's channel is open (a released shard is announced until it is closed)."""
        known = self._shards.get(shard)
        return 0 if known is None or known.closed.is_set() else max(1, self.dispatcher.held_in(shard))

    def backlog(self) -> dict[int, int]:
        """Commands not started per shard, for balancing work between replicas: ready in the queue (as last
        polled while held) and waiting in the read-ahead (a deep one holds a backlog here, not in the queue)."""
        unstarted = self.dispatcher.waiting_by_queue()
        return {n: s.waiting + unstarted.get(n, 0) for n, s in self._shards.items()}

    def loads(self) -> dict[int, QueueDepth]:
        return {n: QueueDepth(s.waiting, s.tenant) for n, s in self._shards.items() if s.owned}

    @property
    def reading_paused(self) -> bool:
        return self._gate.paused

    # --- taking and giving back -------------------------------------------------------------------

    async def start(self) -> None:
        with self._gate.answering():
            self._probes = [await self._connection.channel() for _ in range(PROBE_CHANNELS)]
        self._spawn(self._poll(), "shard-depths")

    async def take(self, number: int) -> None:
        shard = self._shards.setdefault(number, _Shard(number))
        if not shard.closed.is_set():  # still closing from an earlier release: it is subscribed again after
            shard.owned = shard.retake = True
            return
        if self._on_taken is not None:
            self._on_taken(number)  # before the first delivery: what was known of its documents may be stale
        shard.owned = True
        await self._subscribe(shard)

    async def release(self, number: int) -> None:
        shard = self._shards[number]
        shard.owned = shard.retake = False
        self._give_back(shard, Subscription.CLOSING)

    async def stop(self, grace_s: float) -> None:
        """For shutdown (after the assigner released every shard): waits up to ``grace_s`` for started
        commands to finish, then cancels the rest; every channel is closed, which returns what is unsettled."""
        self._stopping = True
        self._mind_room()  # nothing more is taken in; reading must go on for the channels' closes
        for shard in self._shards.values():
            shard.owned = shard.retake = False
            if shard.state is not Subscription.CLOSED:
                self._give_back(shard, Subscription.CLOSING)
        waits = [asyncio.ensure_future(s.closed.wait()) for s in self._shards.values()]
        if waits:
            _done, late = await asyncio.wait(waits, timeout=grace_s)
            for wait in late:
                wait.cancel()
        running = [task for shard in self._shards.values() for task in shard.tasks]
        if running:
            log.info("drain_grace_over", cancelled=len(running))
            # Once more after 4 s (a cancel lost to asyncio.wait_for's race), but no sooner: a command's
            # cleanup (a checkout cancelled in DMS) may take a round trip; whatever is left after 5 s is left.
            await cancel_and_wait(running, again_after_s=4, give_up_after_s=5)
        for shard in self._shards.values():
            await self._close(shard)
        await cancel_and_wait(self._background)

    def _give_back(self, shard: _Shard, state: Subscription) -> None:
        if shard.state is Subscription.CLOSED:
            return
        shard.state = state
        self.dispatcher.withdraw(shard.number)
        self._mind_room()  # what it held waiting is gone
        self._close_when_idle(shard)

    def _close_when_idle(self, shard: _Shard) -> None:
        if shard.state is Subscription.CLOSING and not self.dispatcher.started(shard.number):
            self._spawn(self._close_and_maybe_retake(shard), f"close-{shard.number}")

    async def _close_and_maybe_retake(self, shard: _Shard) -> None:
        await self._close(shard)
        if shard.retake and shard.owned and not self._stopping:
            shard.retake = False
            await self._subscribe(shard)

    async def _subscribe(self, shard: _Shard) -> None:
        with self._gate.answering():
            channel = await self._connection.channel()
            try:
                name, arguments = self._names[shard.number], self._arguments
                queue = await channel.declare_queue(name, durable=True, arguments=arguments)
                await channel.set_qos(prefetch_count=self._read_ahead)
                shard.channel = channel
                shard.state = Subscription.SUBSCRIBED
                shard.closed.clear()
                await queue.consume(functools.partial(self._deliver, shard, channel))
            except BaseException:
                shard.state, shard.channel = Subscription.CLOSED, None
                shard.closed.set()
                with contextlib.suppress(Exception):  # the take is tried again next round, on a new channel
                    await channel.close()
                raise

    async def _close(self, shard: _Shard) -> None:
        channel, shard.channel = shard.channel, None
        shard.state = Subscription.CLOSED
        if channel is not None:
            try:
                if self._acks is not None:
                    await self._acks.flush()  # what settled is acked, not returned
                with self._gate.answering():
                    await channel.close()  # the broker returns the channel's unsettled deliveries, in order
            except Exception as exc:  # connection gone: the broker has returned them already
                log.info("shard_channel_close_failed", shard=shard.number, error=repr(exc))
        shard.closed.set()

    # --- deliveries and the commands the dispatcher starts ----------------------------------------

    async def _deliver(self, shard: _Shard, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        self._heard()
        if shard.state is not Subscription.SUBSCRIBED or shard.channel is not channel:
            return  # given back meanwhile: left unsettled, the channel's close returns it in order
        shard.tenant = tenant_of_routing_key(message.routing_key or "")
        incoming = self._consumer.read(message, shard.number)
        self.dispatcher.offer(
            Held(
                incoming,
                shard.number,
                incoming.document,
                shard.tenant or "",
                len(message.body or b"") + HELD_OVERHEAD_BYTES,
                issue_order(incoming),
            )
        )
        self._mind_memory()

    def _start(self, held: Held[Incoming]) -> None:
        shard = self._shards[held.queue]
        task = asyncio.create_task(self._run(shard, held), name=f"command-{held.queue}")
        shard.tasks.add(task)
        task.add_done_callback(shard.tasks.discard)

    async def _run(self, shard: _Shard, held: Held[Incoming]) -> None:
        ending = Ending.WITHDRAWN
        try:
            if self._acks is not None and self._acks.pending_for(held.document):
                await self._acks.flush()  # its document's last command is acked before this one starts
            ending = await self._consumer.run(held.payload, functools.partial(self.dispatcher.park, held))
        finally:
            self.dispatcher.finished(held)
            if ending is Ending.GIVE_BACK and shard.state is Subscription.SUBSCRIBED:
                shard.retake = shard.owned
                self._give_back(shard, Subscription.CLOSING)
            self._close_when_idle(shard)
            self._mind_room()

    # --- memory -----------------------------------------------------------------------------------

    def _mind_memory(self) -> None:
        """Past READ_AHEAD_BYTES, reading stops (again: a read past ``longest_s`` may have let more in)."""
        if self.dispatcher.held_bytes <= self._read_ahead_bytes or self._stopping:
            return
        if not self._over_budget:
            self._over_budget = True
            log.info(
                "read_ahead_full_reading_paused",
                held_bytes=self.dispatcher.held_bytes,
                read_ahead_bytes=self._read_ahead_bytes,
                held=self.dispatcher.held,
            )
        self._gate.pause()

    def _mind_room(self) -> None:
        """Under half of READ_AHEAD_BYTES again (or stopping), reading goes on."""
        if not self._over_budget or (self.dispatcher.held_bytes >= self._read_ahead_bytes // 2 and not self._stopping):
            return
        self._over_budget = False
        log.info("read_ahead_reading_resumed", held_bytes=self.dispatcher.held_bytes)
        self._gate.resume()

    # --- depths -----------------------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            if self._gate.overdue():  # one read: the connection's heartbeats come in; the next delivery pauses
                self._gate.resume()
            try:
                if not self._gate.paused:  # the depths wait: asking would read what the pause holds back
                    await self._read_depths()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: the robust connection recovers; try next round
                log.warning("queue_depths_failed", error=repr(exc))
            await asyncio.sleep(self._poll_s)

    async def _read_depths(self) -> None:
        held = []
        for shard in self._shards.values():
            if not shard.owned:
                continue
            if shard.state is Subscription.SUBSCRIBED and self.dispatcher.held_in(shard.number) * 2 < self._read_ahead:
                shard.waiting = 0  # its prefetch has room: the broker has delivered what was ready
            else:
                held.append(shard)
        if not held or not self._probes:
            return
        underlays = [await probe.get_underlay_channel() for probe in self._probes]

        async def look(probe: int) -> None:
            for shard in held[probe :: len(underlays)]:
                with contextlib.suppress(Exception):  # a queue deleted under us: its consumer goes too
                    declared = await underlays[probe].queue_declare(self._names[shard.number], passive=True)
                    shard.waiting = declared.message_count or 0

        with self._gate.answering():
            await asyncio.gather(*(look(p) for p in range(len(underlays))))

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


def issue_order(incoming: Incoming) -> float:
    """When the command was issued (epoch seconds, ``worker.intake.envelope.issued_at``), never later than now
    (a time in the future would keep it behind its tenant's newer commands); now when unknown. It orders only
    its own tenant's commands in the dispatcher, so a wrong clock costs no one else."""
    command, now = incoming.command, time.time()
    stamp = issued_at(command.time if command is not None else None, incoming.message.timestamp)
    return now if stamp is None else min(now, stamp.timestamp())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("shard_task_failed", task=task.get_name(), error=repr(task.exception()))
