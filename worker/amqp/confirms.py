"""Publishing until the broker confirms, across connection and node loss.

A publish whose confirm was lost with its channel or connection may or may not have reached the broker;
RabbitMQ's advice (docs ``reliability.md``) is to send it again and let the receiver absorb duplicates. So
every publish the worker and its tools depend on goes through ``publish_until_confirmed``: it retries on a
lost connection or channel and on a negative confirm (a quorum queue without a leader for a moment), waiting
for the robust connection to come back, and gives up only after ``deadline_s`` or when told the publish is
no longer wanted. An unroutable message (``PublishError``) is not retried: that is a topology fault.

Duplicates are safe by design: a command carries its marker (exactly once per CloudEvent), a result event
may repeat and then names the same object and version, and a dead-letter copy is a copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractMessage,
    AbstractRobustChannel,
)
from aio_pika.exceptions import PublishError
from aiormq.exceptions import ChannelInvalidStateError

from worker import backoff

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # then 2 s between tries until the deadline; each jittered
DEFAULT_DEADLINE_S = 120.0
ATTEMPT_TIMEOUT_S = 10.0  # a confirm that never comes (a channel left in limbo by a failover) counts as lost


def worth_retrying(exc: BaseException) -> bool:
    """Pure: did this publish fail in a way another try can fix (the broker may even have it already)?"""
    if isinstance(exc, PublishError):  # returned as unroutable: the same publish would be returned again
        return False
    return isinstance(
        exc,
        aiormq.exceptions.DeliveryError  # nack: the queue could not take it just now
        | aiormq.exceptions.AMQPConnectionError
        | aiormq.exceptions.ChannelClosed
        | aiormq.exceptions.ChannelInvalidStateError
        | ConnectionError
        | TimeoutError,
    )


def delivery_lost(message: AbstractIncomingMessage) -> bool:
    """The channel a message came on is closed: it can no longer be settled, and the broker has requeued it
    (its redelivery, on the restored channel, will do the work)."""
    try:
        channel = getattr(message, "channel", None)
    except ChannelInvalidStateError:  # aio-pika raises for a channel that is gone
        return True
    return bool(getattr(channel, "is_closed", False))


async def renew_channel(channel: AbstractChannel) -> None:
    """Closes a robust channel's current AMQP channel so aio-pika opens a fresh one (consumers restored).

    Seen on RabbitMQ 3.10 after a quorum-queue leader died: a channel opened while the queues elected new
    leaders nacked every later publish to them, for minutes; a new channel publishes at once."""
    if not isinstance(channel, AbstractRobustChannel):
        return
    try:
        underlay = await asyncio.wait_for(channel.get_underlay_channel(), 5)
        await underlay.close()
    except Exception as exc:  # already closed or the connection is down: the robust connection restores it
        log.info("channel_renewal_skipped", error=repr(exc))


def _is_nack(exc: BaseException) -> bool:
    return isinstance(exc, aiormq.exceptions.DeliveryError) and not isinstance(exc, PublishError)


async def publish_until_confirmed(
    publish: Callable[[], Awaitable[T]],
    *,
    what: str = "message",
    deadline_s: float = DEFAULT_DEADLINE_S,
    still_wanted: Callable[[], bool] = lambda: True,
    channel: AbstractChannel | None = None,
) -> T:
    """Calls ``publish`` until it returns (the broker confirmed) and returns its result. Retries what
    ``worth_retrying`` allows; re-raises the last error once ``deadline_s`` passed or ``still_wanted()`` is
    false. After repeated nacks the robust ``channel`` the publish goes through is renewed."""
    started = time.monotonic()
    attempt = nacks = 0
    while True:
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):  # in this task: no task per publish
                return await publish()
        except Exception as exc:
            if not worth_retrying(exc) or not still_wanted() or time.monotonic() - started > deadline_s:
                raise
            nacks = nacks + 1 if _is_nack(exc) else 0
            if nacks >= 3 and channel is not None:
                log.warning("publish_nacked_renewing_channel", what=what, nacks=nacks)
                await renew_channel(channel)
                nacks = 0
            delay = backoff.jittered(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
            attempt += 1
            log.warning("publish_unconfirmed_retrying", what=what, attempt=attempt, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)


class ConfirmingExchange:
    """An exchange whose ``publish`` returns only once the broker confirmed, sending again what a lost
    connection left unconfirmed (see the module docstring). Wraps the robust exchange of a robust channel."""

    def __init__(self, exchange: AbstractExchange, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self._exchange = exchange
        self._deadline_s = deadline_s
        self.name = exchange.name

    async def publish(self, message: AbstractMessage, routing_key: str, *, mandatory: bool = True) -> Any:
        return await publish_until_confirmed(
            lambda: self._exchange.publish(message, routing_key, mandatory=mandatory),
            what=f"{self.name or 'default exchange'}/{routing_key}",
            deadline_s=self._deadline_s,
            channel=getattr(self._exchange, "channel", None),
        )
