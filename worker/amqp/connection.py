"""One robust broker connection over several addresses (the nodes of a RabbitMQ cluster).

aio-pika's robust connection reconnects to the one URL it was given (aio-pika issue 141), so a client whose
node died waits for that node. ``MultiAddressConnection`` is that same robust connection with a list: a lost
connection or a failed attempt moves it to the next address at once, and only a whole round of failed
addresses makes it wait, longer each round and jittered (``next_attempt``, ``worker.backoff``). Once
connected, aio-pika restores what the connection had: channels with their QoS and publisher confirms,
exchanges, queues, bindings and consumers (consumer tags included), then runs ``reconnect_callbacks``.
Publishes that were waiting for a confirm when the connection went are not replayed by aio-pika:
``worker.amqp.confirms`` sends them again.

Guarantee: while any listed address answers, the connection comes back within one round of attempts after
the first failed round's backoff; it never gives up unless closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aio_pika import RobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.connection import TransportFactory
from aiormq.exceptions import ProbableAuthenticationError
from yarl import URL

from worker.backoff import Jitter, jittered

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0  # one attempt at one address; a silent (firewalled) node must not hold us long


@dataclass(frozen=True)
class Backoff:
    """Waits between rounds of failed attempts: ``initial_s``, doubling, at most ``max_s``; each jittered."""

    initial_s: float = 0.5
    max_s: float = 15.0


def next_attempt(
    index: int, count: int, failures: int, backoff: Backoff = Backoff(), jitter: Jitter = jittered
) -> tuple[int, float]:
    """After a failure at address ``index`` of ``count``, which address to try next and how long to wait
    first (pure but for ``jitter``). ``failures`` counts the attempts that failed in a row, this one included;
    0 means a working connection was just lost. The first round through the list does not wait: another node
    usually answers.
    """
    following = (index + 1) % count
    rounds = failures // count
    if rounds == 0:
        return following, 0.0
    return following, jitter(min(backoff.max_s, backoff.initial_s * 2 ** (rounds - 1)))


def redacted(url: URL) -> str:
    return str(url.with_password("******")) if url.password else str(url)


class MultiAddressConnection(RobustConnection):
    """A robust connection that moves on to the next address whenever the current one fails."""

    def __init__(
        self,
        urls: Sequence[str | URL],
        start: int = 0,
        backoff: Backoff = Backoff(),
        transport_factory: TransportFactory | None = None,
        **kwargs: Any,
    ) -> None:
        if not urls:
            raise ValueError("at least one broker address is needed")
        self.addresses = tuple(URL(str(url)) for url in urls)
        self._index = start % len(self.addresses)
        super().__init__(self.addresses[self._index], **kwargs)
        if transport_factory is not None:  # aio-pika passes its kwargs on to aiormq.connect, this one unparsed
            self.kwargs["transport_factory"] = transport_factory
        self._backoff = backoff
        self._failures = 0
        self._established = False
        self.reconnect_interval = 0.0  # aio-pika waits this long after each attempt; set per attempt below

    @property
    def address(self) -> str:
        """The address in use (or tried next), password hidden."""
        return redacted(self.url)

    async def _on_connected(self) -> None:
        await super()._on_connected()  # restores the channels; raises (and closes) if that fails
        self._established = True
        self._failures = 0
        self.reconnect_interval = 0.0
        if self.connection_attempt > 1:  # the first connection is the caller's to report
            log.info("broker_reconnected", address=self.address)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # aio-pika calls this both when a working connection is lost and when an attempt fails; move on
        # before it tries again.
        lost, self._established = self._established, False
        self._failures = 0 if lost else self._failures + 1
        previous = self.address
        self._index, self.reconnect_interval = next_attempt(
            self._index, len(self.addresses), self._failures, self._backoff
        )
        self.url = self.addresses[self._index]
        # Before the first connection the caller reports failures (connect_robust tries the next address).
        if self.connection_attempt and not (self._close_called or self.is_closed):
            log.warning(
                "broker_connection_lost" if lost else "broker_connect_failed",
                address=previous,
                next_address=self.address,
                retry_in_s=self.reconnect_interval,
            )
        await super()._on_connection_close(closing)


class BrokerUnreachable(ConnectionError):
    """No listed address accepted a connection."""


async def connect_robust(
    urls: Sequence[str],
    timeout_s: float = CONNECT_TIMEOUT_S,
    backoff: Backoff = Backoff(),
    transport_factory: TransportFactory | None = None,
) -> MultiAddressConnection:
    """Connects to the first address that answers, in the order given; raises ``BrokerUnreachable`` if none
    does. From then on the connection survives the loss of any node while another listed one answers.
    ``transport_factory``: opens its sockets (``worker.amqp.read_gate``)."""
    errors: list[str] = []
    for start, url in enumerate(urls):
        connection = MultiAddressConnection(urls, start=start, backoff=backoff, transport_factory=transport_factory)
        try:
            await connection.connect(timeout=timeout_s)
            return connection
        except ProbableAuthenticationError:
            await connection.close()
            raise  # the broker answered and refused us: another try or address would not mend the credentials
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            errors.append(f"{redacted(URL(url))}: {type(exc).__name__}: {exc}")
            await connection.close()
        except BaseException:  # cancelled (told to stop mid-handshake): no reconnect loop may outlive us
            await asyncio.shield(connection.close())
            raise
    raise BrokerUnreachable("no broker address answered: " + "; ".join(errors))
