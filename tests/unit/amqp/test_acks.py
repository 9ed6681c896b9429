"""Which ack frames acknowledge what is settled (``ChannelAcks``: pure bookkeeping), and when they go
(``DelayedAcks``, over a fake channel)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from worker.amqp.acks import ChannelAcks, DelayedAcks


def settle(acks: ChannelAcks, *tags: int) -> list[tuple[int, bool]]:
    acks.done.update(tags)
    return acks.frames()


def test_a_run_from_the_lowest_unacked_tag_is_one_multiple_ack() -> None:
    acks = ChannelAcks()
    assert settle(acks, 3, 1, 2) == [(3, True)]
    assert settle(acks, 4) == [(4, False)]
    assert settle(acks, 5, 6) == [(6, True)]


def test_tags_past_a_gap_are_acked_one_by_one_and_the_gap_is_never_acked() -> None:
    acks = ChannelAcks()
    assert settle(acks, 1, 2, 4, 5) == [(2, True), (4, False), (5, False)]
    assert settle(acks, 7) == [(7, False)]  # 3 and 6 are still running: no multiple ack may cover them


def test_once_the_gap_is_settled_the_run_goes_through_what_was_acked_alone() -> None:
    acks = ChannelAcks()
    settle(acks, 1, 2, 4, 5)
    assert settle(acks, 3) == [(3, False)]  # 4 and 5 were acked already: a multiple ack to 5 would be refused
    assert settle(acks, 6, 8) == [(6, False), (8, False)]
    assert settle(acks, 7, 9) == [(9, True)]  # 8 acked alone, 7 and 9 now: the last tag is an unacked one


def test_nothing_settled_sends_nothing() -> None:
    acks = ChannelAcks()
    assert acks.frames() == []
    settle(acks, 1)
    assert acks.frames() == []


class FakeChannel:
    def __init__(self) -> None:
        self.is_closed = False
        self.sent: list[tuple[int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.sent.append((tag, multiple))


def delivery(channel: FakeChannel, tag: int) -> Any:
    return SimpleNamespace(channel=channel, delivery_tag=tag)


async def test_succeeded_uploads_wait_and_go_as_one_frame() -> None:
    channel, acks = FakeChannel(), DelayedAcks(delay_s=0.05)
    for tag in (1, 2, 3):
        acks.later(delivery(channel, tag), f"doc{tag}")
    await asyncio.sleep(0)
    assert channel.sent == []
    assert acks.pending_for("doc2") and not acks.pending_for("doc9") and not acks.pending_for(None)
    await asyncio.sleep(0.1)
    assert channel.sent == [(3, True)]
    assert not acks.pending_for("doc2")


async def test_any_other_outcome_is_acked_at_once_with_whatever_waits() -> None:
    channel, acks = FakeChannel(), DelayedAcks(delay_s=60)
    acks.later(delivery(channel, 1), "a")
    await acks.now(delivery(channel, 2))  # a failed command: run again, it could succeed
    assert channel.sent == [(2, True)]
    assert not acks.pending_for("a")


async def test_a_closed_channel_gets_no_frames() -> None:
    channel, acks = FakeChannel(), DelayedAcks(delay_s=60)
    acks.later(delivery(channel, 1), "a")
    channel.is_closed = True  # the broker has returned the delivery
    await acks.flush()
    assert channel.sent == []
