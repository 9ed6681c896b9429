"""Acks settled deliveries in as few frames as their delivery order allows.

Every ack frame costs the broker a wake-up of the connection's reader, the channel and the queue, and a quorum
queue writes each one to its Raft log as a settle command. So the ack of a succeeded upload waits up to
``delay_s`` (``ACK_DELAY_MS``) and goes with the others of its channel: ``basic.ack`` with ``multiple`` for the
run of tags from the channel's lowest unacked one, one frame each for the done tags past a gap. With a
replica's deliveries spread over a tenant's 16 lanes, this cut the broker's CPU per upload by a quarter to a
third (``python -m tests.bench faststream``; README, Benchmarks).

Waiting never makes an outcome less durable: a delivery is handed here only once its outcome is (the result
event or the dead-letter copy confirmed). What a crash can do is return a settled delivery, which runs again;
so only what runs again to the same outcome waits:

* a succeeded upload runs again to the version it wrote (its marker is found in the document's versions);
* anything else is acked at once (``now``), with whatever waits: a failed or dead-lettered command could
  succeed when run again, and a delete run again could find a document written after it;
* a document's next command does not start while its last one's ack waits (``pending_for``; the caller
  flushes first): a command run again never finds its document's later versions.

An ack lost with its channel is a redelivery, as one lost on the wire always was. Whoever closes a channel on
purpose calls ``flush`` first, so a give-back or a shutdown returns nothing that was settled.

``multiple`` acks every unacked delivery of the channel up to its tag, and RabbitMQ closes the channel if
that tag is not an unacked one. Delivery tags count 1, 2, 3, ... per channel, and a shard channel has one
consumer; so a run goes only through tags handed here (acked now or before), and ends at the first tag
that was not: a delivery still running, or one left unsettled on purpose, is never acked by another's ack.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from aio_pika.abc import AbstractIncomingMessage

log = structlog.get_logger(__name__)


@dataclass
class ChannelAcks:
    """What one channel's acks stand at (pure bookkeeping: ``frames`` says what to send)."""

    floor: int = 0  # every tag up to this one is acked
    done: set[int] = field(default_factory=set)  # settled, ack not sent yet
    acked_above: set[int] = field(default_factory=set)  # acked alone, above the floor (past a gap)

    def frames(self) -> list[tuple[int, bool]]:
        """(delivery tag, multiple) for every ack frame that acks what is done, fewest first; marks them sent."""
        tag, last, run = self.floor + 1, 0, 0
        while tag in self.done or tag in self.acked_above:
            if tag in self.done:
                self.done.discard(tag)
                last, run = tag, run + 1
            else:
                self.acked_above.discard(tag)
            tag += 1
        self.floor = tag - 1
        frames = [(last, run > 1)] if run else []
        for single in sorted(self.done):
            frames.append((single, False))
            self.acked_above.add(single)
        self.done.clear()
        return frames


class DelayedAcks:
    """Acks of settled deliveries, sent together at most ``delay_s`` after the first of them."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self._channels: WeakKeyDictionary[Any, ChannelAcks] = WeakKeyDictionary()  # aiormq channel -> its acks
        self._documents: set[Hashable] = set()  # documents whose last command's ack waits
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def later(self, message: AbstractIncomingMessage, document: Hashable | None) -> None:
        """A succeeded upload: ack it within ``delay_s`` (never raises; a channel gone meanwhile returned it)."""
        if self._add(message):
            if document is not None:
                self._documents.add(document)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._send_all)

    async def now(self, message: AbstractIncomingMessage) -> None:
        """Any other outcome: ack it, and whatever waits, at once."""
        self._add(message)
        await self.flush()

    def pending_for(self, document: Hashable | None) -> bool:
        return document is not None and document in self._documents

    async def flush(self) -> None:
        """Sends every ack waiting now and waits until they are written (before a channel is closed)."""
        self._send_all()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _add(self, message: AbstractIncomingMessage) -> bool:
        tag = message.delivery_tag
        try:
            channel = message.channel
        except Exception:  # aio-pika raises for a channel that is gone: the broker has the delivery back
            return False
        if tag is None:
            return False
        acks = self._channels.get(channel)
        if acks is None:
            acks = self._channels[channel] = ChannelAcks()
        acks.done.add(tag)
        return True

    def _send_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._documents.clear()
        for channel, acks in list(self._channels.items()):
            frames = acks.frames() if acks.done else []
            if frames:
                task = asyncio.ensure_future(_send(channel, frames))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)


async def _send(channel: Any, frames: list[tuple[int, bool]]) -> None:
    for tag, multiple in frames:
        if channel.is_closed:
            log.info("acks_lost_with_channel", unsent=len(frames))  # the broker has returned them: redelivered
            return
        with contextlib.suppress(Exception):  # closed meanwhile: as above
            await channel.basic_ack(tag, multiple=multiple)
