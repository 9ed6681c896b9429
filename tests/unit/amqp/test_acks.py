"""Which ack frames acknowledge what is settled (``worker.amqp.acks.ChannelAcks``): pure bookkeeping."""

from __future__ import annotations

from worker.amqp.acks import ChannelAcks


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
