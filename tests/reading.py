"""The consumer's real read path (``CommandConsumer.read``: size limit, JSON, the command model, the envelope,
the ids a failed event names) on a bare message, for unit tests and fuzzing without a broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from worker.intake.consumer import CommandConsumer, Incoming
from worker.runtime.metrics import WorkerMetrics
from worker.settings import Settings


@dataclass
class Message:
    """What ``CommandConsumer.read`` looks at of an aio-pika incoming message."""

    body: bytes
    exchange: str | None = ""
    routing_key: str | None = ""
    type: str | None = None


def read(body: bytes, settings: Settings | None = None, **envelope: Any) -> Incoming:
    """``envelope``: the message's ``exchange``, ``routing_key`` and ``type``."""
    settings = settings or Settings(_env_file=None)
    consumer = CommandConsumer(
        settings,
        settings,
        settings.max_file_size,
        channel=cast(Any, None),  # reading touches neither the broker, the handlers nor the publisher
        handlers=cast(Any, None),
        publisher=cast(Any, None),
        observer=WorkerMetrics(),
    )
    return consumer.read(cast(AbstractIncomingMessage, Message(body, **envelope)))
