"""Builds and publishes commands: for upstream developers, demos and tests (the worker itself only consumes).

An upload carries its content inline (base64, a third larger) or by reference (``content_url``, the claim
check RabbitMQ recommends for large payloads). An inline upload that would pass the broker's maximum
message size (16 MiB by default on RabbitMQ 4.x, 128 MiB on 3.x) is refused here, before it is encoded,
with a pointer to ``content_url``: the broker would refuse it anyway, less clearly.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustChannel

from worker import tracing
from worker.amqp.confirms import DEFAULT_DEADLINE_S, publish_until_confirmed
from worker.amqp.routing import command_destination
from worker.contracts import Command, DeleteCommand, DeleteData, UploadCommand, UploadData
from worker.results.events import to_message

UPSTREAM_SOURCE = "urn:dms-upload-worker:cli"
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # RabbitMQ 4.x's default max_message_size, the strictest
ENVELOPE_BYTES = 4096  # what an upload command adds around its base64 content, generously


class MessageTooLarge(ValueError):
    """The command would be larger than the broker takes; send the content by reference instead."""


def inline_message_size(content_size: int) -> int:
    """About how large an upload command carrying ``content_size`` bytes inline is (pure)."""
    return 4 * ((content_size + 2) // 3) + ENVELOPE_BYTES


def check_fits_inline(content_size: int, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    message_size = inline_message_size(content_size)
    if message_size > max_message_size:
        raise MessageTooLarge(
            f"a {content_size}-byte file sent inline makes a message of about {message_size} bytes, more than the "
            f"broker takes ({max_message_size} bytes, DMS_WORKER_BROKER_MAX_MESSAGE_SIZE): put the file where the "
            "worker can fetch it and send its content_url instead (python -m worker publish FILE --url URL)"
        )


def _envelope(document_id: uuid.UUID, source: str) -> dict[str, Any]:
    """The CloudEvent attributes every new command gets: a fresh id, the source, now, the document."""
    return {"id": str(uuid.uuid4()), "source": source, "time": dt.datetime.now(dt.UTC), "subject": str(document_id)}


def upload_command(
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    file_name: str,
    mime_type: str,
    content: bytes,
    *,
    declare_integrity: bool = True,
    source: str = UPSTREAM_SOURCE,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
) -> UploadCommand:
    """An upload with ``content`` inline; ``MessageTooLarge`` past ``max_message_size`` (``None``: no check)."""
    if max_message_size is not None:
        check_fits_inline(len(content), max_message_size)
    return UploadCommand(
        **_envelope(document_id, source),
        data=UploadData(
            tenant_id=tenant_id,
            document_id=document_id,
            file_name=file_name,
            mime_type=mime_type,
            content_base64=base64.b64encode(content).decode(),
            size=len(content) if declare_integrity else None,
            sha256=hashlib.sha256(content).hexdigest() if declare_integrity else None,
        ),
    )


def upload_command_by_url(
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    file_name: str,
    mime_type: str,
    content_url: str,
    *,
    size: int | None = None,
    sha256: str | None = None,
    source: str = UPSTREAM_SOURCE,
) -> UploadCommand:
    """An upload whose content the worker fetches from ``content_url`` (its host must be on the worker's
    ``CONTENT_URL_ALLOWED_HOSTS``); ``size`` and ``sha256``, when given, are verified."""
    return UploadCommand(
        **_envelope(document_id, source),
        data=UploadData(
            tenant_id=tenant_id,
            document_id=document_id,
            file_name=file_name,
            mime_type=mime_type,
            content_url=content_url,
            size=size,
            sha256=sha256,
        ),
    )


def delete_command(tenant_id: uuid.UUID, document_id: uuid.UUID, source: str = UPSTREAM_SOURCE) -> DeleteCommand:
    return DeleteCommand(
        **_envelope(document_id, source),
        data=DeleteData(tenant_id=tenant_id, document_id=document_id),
    )


async def publish_command(
    channel: AbstractChannel,
    command: Command,
    exchange_prefix: str = "dms.commands",
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> None:
    """Publishes on a channel with publisher confirms; returns once the broker has the command.

    On a robust channel (``worker.amqp.connection.connect_robust`` with the cluster's addresses) a publish
    whose confirm was lost with a node is sent again until confirmed or ``deadline_s`` passed; the worker
    absorbs the duplicate (exactly once per CloudEvent). A closed plain channel fails at once.

    With tracing on, the publish is a span (a child of the command's own trace context if it has one, else of
    the caller's current span) and the command is stamped with it: its ``traceparent`` attribute and header."""
    data = command.data
    exchange_name, key = command_destination(exchange_prefix, command.type, data.tenant_id, data.document_id)
    with tracing.span(
        f"publish {command.type}",
        tracing.SpanKind.PRODUCER,
        tracing.command_attributes(command),
        tracing.incoming_context(command, None),
    ):
        headers = tracing.stamp(command)
        message = to_message(command, headers)

        async def publish() -> None:
            exchange = await channel.get_exchange(exchange_name, ensure=False)
            await exchange.publish(message, routing_key=key, mandatory=True)

        robust = isinstance(channel, AbstractRobustChannel)  # a plain channel never comes back
        await publish_until_confirmed(
            publish, what=f"command {command.id}", deadline_s=deadline_s, still_wanted=lambda: robust, channel=channel
        )
