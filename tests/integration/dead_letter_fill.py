"""Dead letters made to order: commands put into the DLQ with the headers the worker writes when it
dead-letters one, without waiting for retries to run out (for the console's tests and benchmark)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel

from worker.amqp import routing
from worker.amqp.names import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    FIRST_ATTEMPT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    command_exchange_name,
)
from worker.producer import upload_command
from worker.settings import Settings


@dataclass(frozen=True)
class Made:
    command_id: str
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    error_code: str


async def fill_dlq(
    channel: AbstractChannel,
    settings: Settings,
    kinds: Sequence[tuple[uuid.UUID, str, int]],
    content: bytes = b"dead letter content",
    at_once: int = 200,
) -> list[Made]:
    """For each (tenant, error code, count), that many uploads of new documents into the DLQ, as the worker
    would have put them there after 3 attempts; ``channel`` must have publisher confirms."""
    made: list[Made] = []
    messages: list[aio_pika.Message] = []
    now = dt.datetime.now(dt.UTC)
    for tenant, code, count in kinds:
        for i in range(count):
            document = uuid.uuid4()
            command = upload_command(tenant, document, f"{code}-{i}.txt", "text/plain", content)
            headers: dict[str, object] = {
                ORIGINAL_EXCHANGE_HEADER: command_exchange_name(settings.command_exchange, "upload"),
                ORIGINAL_ROUTING_KEY_HEADER: routing.routing_key(tenant, document),
                FIRST_ATTEMPT_HEADER: (now - dt.timedelta(minutes=5)).isoformat(),
                ATTEMPT_HEADER: 3,
                ERROR_CODE_HEADER: code,
                ERROR_MESSAGE_HEADER: f"{code}: DMS createDocument answered 503 (made for a test)",
                DEAD_LETTERED_AT_HEADER: now.isoformat(),
            }
            messages.append(
                aio_pika.Message(
                    command.model_dump_json().encode(),
                    message_id=command.id,
                    type=command.type,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=headers,  # type: ignore[arg-type]
                )
            )
            made.append(Made(command.id, tenant, document, code))
    exchange = channel.default_exchange
    for start in range(0, len(messages), at_once):  # in order: each batch confirmed before the next
        batch = messages[start : start + at_once]
        await asyncio.gather(*(exchange.publish(m, routing_key=settings.dead_letter_queue) for m in batch))
    return made
