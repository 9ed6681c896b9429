"""Whether a delivery can still be settled: aio-pika raises, rather than answers, for a channel that is gone."""

from __future__ import annotations

from dataclasses import dataclass

from aiormq.exceptions import ChannelInvalidStateError

from worker.amqp.confirms import delivery_lost


@dataclass
class Channel:
    is_closed: bool


class Message:
    def __init__(self, channel: Channel | None) -> None:
        self._channel = channel

    @property
    def channel(self) -> Channel:
        if self._channel is None or self._channel.is_closed:  # as aio-pika's IncomingMessage.channel does
            raise ChannelInvalidStateError
        return self._channel


def test_a_delivery_on_an_open_channel_is_not_lost() -> None:
    assert not delivery_lost(Message(Channel(is_closed=False)))  # type: ignore[arg-type]


def test_a_delivery_whose_channel_closed_is_lost_and_asking_does_not_raise() -> None:
    assert delivery_lost(Message(Channel(is_closed=True)))  # type: ignore[arg-type]
    assert delivery_lost(Message(None))  # type: ignore[arg-type]
