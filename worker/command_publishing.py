"""Builds and publishes commands: for upstream developers, demos and tests (the worker itself only consumes)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid

from aio_pika.abc import AbstractExchange

from worker.contracts import Command, DeleteCommand, DeleteData, UploadCommand, UploadData, routing_key
from worker.results import to_message
from worker.sharding import DOCUMENT_HEADER

UPSTREAM_SOURCE = "urn:dms-upload-worker:cli"


def upload_command(
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    file_name: str,
    mime_type: str,
    content: bytes,
    *,
    declare_integrity: bool = True,
    source: str = UPSTREAM_SOURCE,
) -> UploadCommand:
    return UploadCommand(
        id=str(uuid.uuid4()),
        source=source,
        time=dt.datetime.now(dt.UTC),
        subject=str(document_id),
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


def delete_command(tenant_id: uuid.UUID, document_id: uuid.UUID, source: str = UPSTREAM_SOURCE) -> DeleteCommand:
    return DeleteCommand(
        id=str(uuid.uuid4()),
        source=source,
        time=dt.datetime.now(dt.UTC),
        subject=str(document_id),
        data=DeleteData(tenant_id=tenant_id, document_id=document_id),
    )


async def publish_command(exchange: AbstractExchange, command: Command) -> None:
    """Publishes with confirms; returns once the broker has the command."""
    message = to_message(command, headers={DOCUMENT_HEADER: str(command.data.document_id)})
    await exchange.publish(message, routing_key=routing_key(command.type), mandatory=True)
