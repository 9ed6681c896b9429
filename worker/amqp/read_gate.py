"""Pausing the reads of one AMQP connection: a bound in bytes on what the broker pushes to it.

A consumer's prefetch counts deliveries, not bytes (RabbitMQ does not implement ``prefetch_size``), so a
subscription deep enough to reach past another tenant's backlog would also let the broker push as many
large commands at once. Reading stops instead: once the socket is not read, TCP's flow control holds the
broker's writer back, nothing is returned to the queue, and nothing counts as a redelivery. What waits
meanwhile sits in the broker and in the kernel's socket buffers, not in this process. (RabbitMQ 3.10 and 4.0
set no ``send_timeout`` in their default ``tcp_listen_options``; a broker configured with one shorter than a
pause closes the connection instead, and its deliveries come back in order, as after any lost connection.)

It pauses a whole connection, so it is only for one that carries nothing else that must be read to make
progress: publisher confirms, membership heartbeats and the replies to channel operations would wait too.
The worker therefore keeps its shard subscriptions on a connection of their own (``worker.runtime.app``),
and reading is on while a channel operation waits for its reply (``answering``). The connection's own
heartbeats from the broker also wait: a pause ends after ``longest_s`` at the latest (the caller checks
``overdue``), well within aiormq's limit of (heartbeat + 1) x 3 seconds without a frame.

The gate is aiormq's transport factory for the connection (a public hook of ``aiormq.Connection``): it opens
the socket as aiormq would (TCP, or TLS for ``amqps``) and keeps its transport, a new one after every
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import structlog
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

log = structlog.get_logger(__name__)


class ReadGate(TransportFactory):
    def __init__(self, longest_s: float = 5.0) -> None:
        self.longest_s = longest_s
        self._transport: asyncio.Transport | None = None
        self._wanted_paused = False
        self._paused_since = 0.0
        self._answering = 0
        self.pauses = 0  # how often reading was paused (the tests read it)

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        factory = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await factory.create(url, **kwargs)
        self._transport = writer.transport  # type: ignore[assignment]  # a ReadTransport too
        self._wanted_paused = False  # a new connection holds nothing yet, and its handshake must be read
        return reader, writer

    @property
    def paused(self) -> bool:
        return self._wanted_paused

    def pause(self) -> None:
        """Stops reading (until ``resume``); while a channel operation waits for its reply, after it."""
        if not self._wanted_paused:
            self._wanted_paused, self._paused_since = True, time.monotonic()
            self.pauses += 1
        self._apply()

    def resume(self) -> None:
        self._wanted_paused = False
        self._apply()

    def overdue(self) -> bool:
        """Paused for ``longest_s``: the caller resumes (and may pause again at the next delivery)."""
        return self._wanted_paused and time.monotonic() - self._paused_since >= self.longest_s

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Reading is on inside: a channel operation (open, declare, consume, close) needs the broker's reply."""
        self._answering += 1
        self._apply()
        try:
            yield
        finally:
            self._answering -= 1
            self._apply()

    def _apply(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._wanted_paused and not self._answering:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()
