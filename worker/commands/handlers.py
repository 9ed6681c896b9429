"""Command handlers: turn a parsed upload/delete command into DMS calls and a success payload.

The dispatcher (``worker.intake.dispatcher``) runs one command per document at a time, in order, before calling them.
They sit between the consumer (which knows nothing of CMIS) and the DMS client (which knows nothing of
commands), and raise the typed errors of ``worker.errors`` for everything that goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Protocol

import aiohttp
import structlog

from worker.commands import validation
from worker.commands.content import decode_inline, fetch_url
from worker.commands.delivery import Delivery
from worker.commands.known_documents import DocumentKey, KnownDocument, KnownDocuments, command_marker
from worker.commands.spool import InlineContent, Spool, UploadContent
from worker.contracts import DeleteCommand, DeleteSucceededData, UploadCommand, UploadSucceededData
from worker.dms.protocol import Content, DmsApi, DocumentVersion, RepositoryRef
from worker.dms.repositories import TenantRepositories
from worker.errors import (
    DmsRejected,
    DocumentLocked,
    NameConflict,
    TenantOffboarded,
    UnknownTenant,
    VersionLimitReached,
)
from worker.settings import CommandSettings

log = structlog.get_logger(__name__)

RESEND_AT_MOST = 256 * 1024  # a first-version attempt on a document that exists sends the content in vain
CHECK_IN_LOOP_AT_MOST = 1024 * 1024  # larger contents are checked for active content in a thread


class DmsClientSource(Protocol):
    def for_tenant(self, tenant_id: uuid.UUID) -> DmsApi: ...


class Handlers:
    def __init__(
        self,
        settings: CommandSettings,  # what handling reads: limits, content fetching, the DMS user
        clients: DmsClientSource,
        repositories: TenantRepositories,
        http: aiohttp.ClientSession,
        spool: Spool | None = None,
    ) -> None:
        self._settings = settings
        self._clients = clients
        self._repositories = repositories
        self._http = http
        self._known = KnownDocuments()
        self._spool = spool  # opened (and checked) at start-up by the app; else on the first content_url
        self._fetches = asyncio.Semaphore(settings.content_fetch_concurrency)  # bounds the spool's disk use

    def forget_shard(self, shard: int) -> None:
        """The shard was (re)taken: another replica may have written its documents meanwhile."""
        self._known.forget_shard(shard)

    def forget_everything(self) -> None:
        """After losing the broker connection: shards may have moved while we were away."""
        self._known.forget_all()

    async def handle_upload(self, command: UploadCommand, delivery: Delivery) -> UploadSucceededData:
        try:
            return await self._handle_upload(command, delivery)
        except UnknownTenant:
            # The seed's last offboarding step disconnects the tenant's destination: its uploads then end as
            # offboarded (acked), not in the DLQ waiting for a destination that is not coming back.
            if await self._repositories.offboarded(command.data.tenant_id):
                raise TenantOffboarded(
                    f"tenant {command.data.tenant_id} was offboarded (and has no DMS destination any more)"
                ) from None
            raise

    async def _handle_upload(self, command: UploadCommand, delivery: Delivery) -> UploadSucceededData:
        data = command.data
        s = self._settings
        file_name = validation.sanitise_file_name(data.file_name, s.max_file_name_length)
        inline = data.inline_content(lambda text: decode_inline(text, s.max_file_size))
        if inline is not None:
            return await self._upload(command, delivery, file_name, InlineContent(inline))
        async with self._fetches:  # held until the upload ends: its spool file lives that long
            if self._spool is None:
                self._spool = Spool.open(s.spool_dir)
            spooled = await fetch_url(
                self._http,
                str(data.content_url),
                s.content_url_allowed_hosts,
                s.max_file_size,
                s.content_fetch_timeout_s,
                self._spool,
            )
            try:
                return await self._upload(command, delivery, file_name, spooled)
            finally:
                spooled.close()  # removes the spool file, whatever happened

    async def _upload(
        self, command: UploadCommand, delivery: Delivery, file_name: str, content: UploadContent
    ) -> UploadSucceededData:
        data = command.data
        s = self._settings
        dms = self._clients.for_tenant(data.tenant_id)
        validation.check_size(content.size, s.max_file_size, data.size)
        sha256 = validation.check_declared_sha256(content.sha256, data.sha256)
        mime = validation.normalise_mime(data.mime_type)
        validation.check_file_type(file_name, mime, content.head, s.allowed_extensions, s.allowed_mime_types)
        await self._check_active_content(file_name, mime, content)

        repo = await self._repositories.find_or_create(dms, data.tenant_id)
        key = (data.tenant_id, data.document_id)
        try:
            version = await self._write(dms, repo, key, file_name, mime, content, delivery)
        except DmsRejected as exc:
            if exc.status != 404 or not await self._repositories.vanished(dms, data.tenant_id, repo):
                raise
            # The repository went away under this replica's cache (an offboarding, or by hand): look again,
            # which refuses an offboarded tenant and otherwise creates it afresh, as for a first upload.
            repo = await self._repositories.find_or_create(dms, data.tenant_id)
            version = await self._write(dms, repo, key, file_name, mime, content, delivery)
        log.info(
            "document_written", object_id=version.object_id, version_label=version.version_label, size=content.size
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
            size=content.size,
            sha256=sha256,
            mime_type=mime,
            attempts=delivery.attempt,
        )

    async def _check_active_content(self, file_name: str, mime: str, content: UploadContent) -> None:
        s = self._settings
        if isinstance(content, InlineContent) and content.size <= CHECK_IN_LOOP_AT_MOST:
            validation.check_active_content(
                file_name, mime, content.data, s.allow_active_content, s.max_archive_expanded_size
            )
            return

        def check() -> None:  # reads the content in chunks (an SVG's script scan may read all of it)
            with content.open() as file:
                validation.check_active_content(
                    file_name, mime, file, s.allow_active_content, s.max_archive_expanded_size
                )

        await asyncio.to_thread(check)

    async def handle_delete(self, command: DeleteCommand, delivery: Delivery) -> DeleteSucceededData:
        data = command.data
        dms = self._clients.for_tenant(data.tenant_id)
        key, marker = (data.tenant_id, data.document_id), command_marker(delivery.source, delivery.command_id)
        if delivery.may_have_written:
            self._known.forget(key)
        remembered = self._known.get(key)
        known = remembered or KnownDocument(delivery.shard, None)
        repo = await self._repositories.find(dms, data.tenant_id)  # never create one just to delete
        existed = known.deleted_by.get(marker, False)
        if repo is not None and marker not in known.deleted_by:
            try:
                current = known.latest if remembered else await dms.find_by_name(repo, str(data.document_id))
                if current is not None:
                    existed = await dms.delete(repo, current.object_id)
            except BaseException:
                self._known.forget(key)
                raise
            known.latest = None
            known.deleted_by[marker] = existed
            self._known.remember(key, known)
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
        dms: DmsApi,
        repo: RepositoryRef,
        key: DocumentKey,
        file_name: str,
        mime: str,
        content: UploadContent,
        delivery: Delivery,
    ) -> DocumentVersion:
        """A new major version, or the version this very command wrote before (then nothing is written).

        A first version is one createDocument (1.0). A later one is checkOut + checkIn(major), with the
        content sent once. What this replica knows of the document spares the lookup; without that
        knowledge, one getAllVersions by path says whether the document exists, which version is the latest
        and which command wrote each version (the marker every version carries). A refusal that can come
        from a remembered view gone stale (an answer lost on the network, a change made by someone else)
        is checked against DMS at once: looked up, and written from what DMS says."""
        name = str(key[1])
        marker = command_marker(delivery.source, delivery.command_id)
        body: Content = content.data if isinstance(content, InlineContent) else content  # bytes: one write
        if delivery.may_have_written:
            self._known.forget(key)  # an earlier attempt may have written: believe only DMS
        known = self._known.get(key)
        try:
            if known is None and content.size <= RESEND_AT_MOST:
                # Most uploads are first versions: try that first. If the document exists, the refusal
                # cost one small body; large ones are looked up first so their content goes once.
                with contextlib.suppress(NameConflict):
                    created = await dms.create_document(repo, name, file_name, mime, body, marker)
                    return self._remember_written(key, KnownDocument(delivery.shard, None), marker, created)
            looked_up = known is None
            if known is None:
                known = await self._look_up(dms, repo, key, delivery.shard)
            while True:
                try:
                    return await self._write_on(dms, repo, key, known, file_name, mime, body, marker, delivery)
                except (DmsRejected, DocumentLocked) as exc:
                    if looked_up or not _may_come_from_a_stale_view(exc):
                        raise
                log.info("dms_view_stale_looking_again", document_id=name)
                self._known.forget(key)
                known, looked_up = await self._look_up(dms, repo, key, delivery.shard), True
        except BaseException:
            self._known.forget(key)  # DMS may have changed in a way we did not see
            raise

    async def _write_on(
        self,
        dms: DmsApi,
        repo: RepositoryRef,
        key: DocumentKey,
        known: KnownDocument | None,
        file_name: str,
        mime: str,
        body: Content,
        marker: str,
        delivery: Delivery,
    ) -> DocumentVersion:
        """The write, given a view of the document (None: DMS has no such document)."""
        earlier = known.written_by.get(marker) if known else None
        if earlier is not None:
            log.info("version_already_written", object_id=earlier.object_id, version_label=earlier.version_label)
            return earlier
        if known is None or known.latest is None:
            try:
                created = await dms.create_document(repo, str(key[1]), file_name, mime, body, marker)
            except NameConflict as exc:  # written by someone else a moment ago: look again next attempt
                raise DocumentLocked(f"document {key[1]} appeared while being created; will retry") from exc
            return self._remember_written(key, known or KnownDocument(delivery.shard, None), marker, created)
        version = await self._new_major_version(dms, repo, known.latest, file_name, mime, body, marker)
        return self._remember_written(key, known, marker, version)

    async def _look_up(
        self, dms: DmsApi, repo: RepositoryRef, key: DocumentKey, shard: int | None
    ) -> KnownDocument | None:
        versions = await dms.versions_by_name(repo, str(key[1]))
        if not versions:
            return None
        known = KnownDocument.from_versions(shard, versions)
        self._known.remember(key, known)
        return known

    def _remember_written(
        self, key: DocumentKey, known: KnownDocument, marker: str, version: DocumentVersion
    ) -> DocumentVersion:
        known.latest = version
        known.written_by[marker] = version
        self._known.remember(key, known)
        return version

    async def _new_major_version(
        self,
        dms: DmsApi,
        repo: RepositoryRef,
        latest: DocumentVersion,
        file_name: str,
        mime: str,
        content: Content,
        marker: str,
    ) -> DocumentVersion:
        if latest.checked_out_id:
            if latest.checked_out_by != self._settings.dms_user:
                # A person or another application holds it: theirs to check in or cancel, never ours.
                raise DocumentLocked("the document is checked out in DMS by another user; waiting for its check-in")
            # Ours: left by an attempt that crashed or lost its answer. Only one command of a document runs at
            # a time in the whole fleet (the shard's owner), so no attempt of ours is still using it.
            log.warning("cancelling_own_stale_checkout", pwc_id=latest.checked_out_id)
            await dms.cancel_check_out(repo, latest.checked_out_id)
        try:
            pwc_id = await dms.check_out(repo, latest.object_id)
        except DmsRejected as exc:
            if exc.status == 404:  # gone since it was looked at (a delete, or a view gone stale): look again
                raise DocumentLocked(f"{exc.message}; the document changed while being written, will retry") from exc
            raise
        try:
            return await dms.check_in(repo, pwc_id, file_name, mime, content, marker, marker)
        except BaseException as exc:
            try:
                await dms.cancel_check_out(repo, pwc_id)
            except Exception as cancel_exc:  # keep the original error; the next attempt cleans up
                log.warning("cancel_checkout_failed", error=repr(cancel_exc))
            if isinstance(exc, DmsRejected) and exc.status in {404, 409} and exc.exception != "constraint":
                raise DocumentLocked(f"check-in conflicted ({exc.message}); will retry") from exc
            raise


def _may_come_from_a_stale_view(error: DmsRejected | DocumentLocked) -> bool:
    """A refusal a remembered view explains: the object is gone (404), checked out, or already exists (409)."""
    if isinstance(error, DocumentLocked):
        return True
    return error.status in {404, 409} and not isinstance(error, VersionLimitReached)
