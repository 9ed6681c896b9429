"""Command handlers: turn a parsed upload/delete command into DMS calls and a success payload.

The consumer serialises commands per document before calling them.
They sit between the consumer (which knows nothing of CMIS) and the DMS client (which knows nothing of
commands), and raise the typed errors of ``worker.errors`` for everything that goes wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog

from worker import content_source, validation
from worker.contracts import DeleteCommand, DeleteSucceededData, UploadCommand, UploadSucceededData
from worker.dms_client import DmsClient, DocumentVersion, RepositoryRef
from worker.errors import DmsRejected, DocumentLocked, NameConflict
from worker.repositories import TenantRepositories
from worker.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    """What the handlers need to know about the message that carried the command."""

    command_id: str
    attempt: int  # 1 for the first try
    redelivered: bool  # the broker may already have seen us work on it

    @property
    def may_have_written(self) -> bool:
        return self.attempt > 1 or self.redelivered


class DmsClientSource(Protocol):
    def for_tenant(self, tenant_id: uuid.UUID) -> DmsClient: ...


def checkin_comment(command_id: str) -> str:
    """Recorded on each new version so a redelivered command can recognise its own earlier write."""
    return f"dms-upload-worker command {command_id}"


class Handlers:
    def __init__(
        self,
        settings: Settings,
        clients: DmsClientSource,
        repositories: TenantRepositories,
        http: aiohttp.ClientSession,
    ) -> None:
        self._settings = settings
        self._clients = clients
        self._repositories = repositories
        self._http = http

    async def handle_upload(self, command: UploadCommand, delivery: Delivery) -> UploadSucceededData:
        data = command.data
        s = self._settings
        dms = self._clients.for_tenant(data.tenant_id)
        file_name = validation.sanitise_file_name(data.file_name, s.max_file_name_length)
        content = data.inline_content(lambda text: content_source.decode_inline(text, s.max_file_size))
        if content is None:
            content = await content_source.fetch_url(
                self._http,
                str(data.content_url),
                s.content_url_allowed_hosts,
                s.max_file_size,
                s.content_fetch_timeout_s,
            )
        validation.check_size(len(content), s.max_file_size, data.size)
        sha256 = validation.check_sha256(content, data.sha256)
        mime = validation.normalise_mime(data.mime_type)
        validation.check_file_type(file_name, mime, content, s.allowed_extensions, s.allowed_mime_types)

        repo = await self._repositories.find_or_create(dms, data.tenant_id)
        version = await self._write(dms, repo, str(data.document_id), file_name, mime, content, delivery)
        log.info(
            "document_written", object_id=version.object_id, version_label=version.version_label, size=len(content)
        )
        return UploadSucceededData(
            command_id=delivery.command_id,
            tenant_id=data.tenant_id,
            document_id=data.document_id,
            repository_id=repo.id,
            object_id=version.object_id,
            version_label=version.version_label,
            version_series_id=version.version_series_id,
            file_name=file_name,
            size=len(content),
            sha256=sha256,
            mime_type=mime,
            attempts=delivery.attempt,
        )

    async def handle_delete(self, command: DeleteCommand, delivery: Delivery) -> DeleteSucceededData:
        data = command.data
        dms = self._clients.for_tenant(data.tenant_id)
        repo = await self._repositories.find(dms, data.tenant_id)  # never create one just to delete
        existed = False
        if repo is not None:
            current = await dms.find_by_name(repo, str(data.document_id))
            if current is not None:
                existed = await dms.delete(repo, current.object_id)
        log.info("document_deleted" if existed else "document_already_absent")
        return DeleteSucceededData(
            command_id=delivery.command_id,
            tenant_id=data.tenant_id,
            document_id=data.document_id,
            repository_id=repo.id if repo else None,
            existed=existed,
            attempts=delivery.attempt,
        )

    async def _write(
        self,
        dms: DmsClient,
        repo: RepositoryRef,
        name: str,
        file_name: str,
        mime: str,
        content: bytes,
        delivery: Delivery,
    ) -> DocumentVersion:
        """First upload: one createDocument (1.0). Later: createDocument's 409 names the document, then
        checkOut + checkIn(major) give the next major version: three DMS calls in all."""
        try:
            return await dms.create_document(repo, name, file_name, mime, content)
        except NameConflict as conflict:
            existing_id = conflict.existing_object_id
        latest = None
        if existing_id is None or delivery.may_have_written:
            latest = await dms.find_by_name(repo, name)
            if latest is None:
                raise DocumentLocked(f"document {name} vanished while being written; will retry")
            earlier = await self._earlier_write(dms, repo, latest, file_name, content, delivery)
            if earlier is not None:
                log.info("version_already_written", object_id=earlier.object_id, version_label=earlier.version_label)
                return earlier
            existing_id = latest.object_id
        return await self._new_major_version(dms, repo, existing_id, latest, file_name, mime, content, delivery)

    @staticmethod
    async def _earlier_write(
        dms: DmsClient,
        repo: RepositoryRef,
        latest: DocumentVersion,
        file_name: str,
        content: bytes,
        delivery: Delivery,
    ) -> DocumentVersion | None:
        """The version this very command wrote before, if any. Check-ins carry the command id; a first
        version (createDocument takes no comment) counts as ours when name and bytes are identical."""
        marker = checkin_comment(delivery.command_id)
        if latest.checkin_comment == marker:
            return latest
        if latest.checkin_comment is None:  # only a first version: compare name and bytes
            if latest.file_name != file_name or latest.length != len(content):
                return None
            return latest if await dms.content(repo, latest.object_id) == content else None
        # A duplicate delivered after a later command: our version may sit below the latest.
        return next((v for v in await dms.versions(repo, latest.object_id) if v.checkin_comment == marker), None)

    async def _new_major_version(
        self,
        dms: DmsClient,
        repo: RepositoryRef,
        object_id: str,
        latest: DocumentVersion | None,
        file_name: str,
        mime: str,
        content: bytes,
        delivery: Delivery,
    ) -> DocumentVersion:
        try:
            pwc_id = await dms.check_out(repo, object_id)
        except DocumentLocked:
            if latest is not None and latest.checked_out_id and delivery.may_have_written:
                # A working copy left behind by a crashed attempt: cancel it, then retry.
                log.warning("cancelling_stale_checkout", pwc_id=latest.checked_out_id)
                await dms.cancel_check_out(repo, latest.checked_out_id)
            raise
        try:
            return await dms.check_in(repo, pwc_id, file_name, mime, content, checkin_comment(delivery.command_id))
        except BaseException as exc:
            try:
                await dms.cancel_check_out(repo, pwc_id)
            except Exception as cancel_exc:  # keep the original error; the next attempt cleans up
                log.warning("cancel_checkout_failed", error=repr(cancel_exc))
            if isinstance(exc, DmsRejected) and exc.status in {404, 409} and exc.exception != "constraint":
                raise DocumentLocked(f"check-in conflicted ({exc.message}); will retry") from exc
            raise
