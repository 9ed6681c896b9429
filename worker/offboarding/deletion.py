"""Empties a repository's ROOT: every document deleted with all its versions, in batches read by paged
listing (getChildren with skipCount/maxItems), at most ``concurrency`` at once and ``rate`` a second.

Resumable by construction: what is left in DMS is the state, so a run that was stopped (killed, a network
failure) is continued by running again; nothing is kept anywhere else. A transient failure is retried on
the worker's backoff schedule (honouring Retry-After); when retries run out the run stops and says so. A
document DMS refuses to delete (a permanent error) is passed over and named at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from worker.dms.protocol import DocumentPage, DocumentVersion, RepositoryRef
from worker.errors import DmsRejected, PermanentError, TransientError
from worker.offboarding.plan import versions_from_label
from worker.results.policy import retry_delay_ms

log = structlog.get_logger(__name__)


class OffboardingDms(Protocol):
    """What emptying a repository needs of DMS (``worker.dms.client.DmsClient`` has it)."""

    async def list_children(self, repo: RepositoryRef, skip: int, max_items: int) -> DocumentPage: ...

    async def versions_of(self, repo: RepositoryRef, object_id: str) -> list[DocumentVersion] | None: ...

    async def cancel_check_out(self, repo: RepositoryRef, pwc_id: str) -> None: ...

    async def delete(self, repo: RepositoryRef, object_id: str) -> bool: ...


class Progress(Protocol):
    """Told of each stage and each document (``worker.runtime.progress``: a bar, or JSON lines)."""

    def start(self, stage: str, total: int | None) -> None: ...

    def advance(self) -> None: ...


@dataclass
class Tally:
    documents: int = 0
    versions: int = 0
    others: int = 0  # objects in ROOT that are not documents (folders): never deleted here
    refused: dict[str, str] = field(default_factory=dict)  # object id -> why DMS would not delete it


class Pace:
    """Spaces the starts of deletions ``1 / per_s`` apart, across all deleters; None or 0: no limit."""

    def __init__(self, per_s: float | None) -> None:
        self.per_s = per_s
        self._next = 0.0

    async def turn(self) -> None:
        if not self.per_s:
            return
        now = asyncio.get_running_loop().time()
        at = max(now, self._next)
        self._next = at + 1 / self.per_s
        if at > now:
            await asyncio.sleep(at - now)


async def count(dms: OffboardingDms, repo: RepositoryRef, page_size: int, progress: Progress) -> Tally:
    """The dry run: documents and versions in ROOT, read page by page; nothing changes."""
    tally = Tally()
    skip = 0
    progress.start("counting", None)
    while True:
        page = await dms.list_children(repo, skip, page_size)
        for document in page.documents:
            tally.documents += 1
            tally.versions += await _versions(dms, repo, document)
            progress.advance()
        tally.others += page.others
        skip += page.size
        if not page.has_more or page.size == 0:
            return tally


async def empty(
    dms: OffboardingDms,
    repo: RepositoryRef,
    progress: Progress,
    *,
    page_size: int = 100,
    batch: int = 2_000,
    concurrency: int = 8,
    pace: Pace | None = None,
    retry_delays_ms: Sequence[int] = (1000, 5000, 30000),
) -> Tally:
    """Deletes every document of ROOT (each with all its versions); returns what it deleted, what DMS refused
    and how many non-documents it left."""
    tally = Tally()
    pace = pace or Pace(None)
    tried: set[str] = set()
    started = False
    while True:
        todo, others, total = await _next_batch(dms, repo, set(tally.refused), page_size, batch)
        if not started:
            progress.start("deleting", total)
            started = True
        tally.others = others
        for document in (d for d in todo if d.object_id in tried):  # DMS keeps listing what it deleted
            tally.refused[document.object_id] = "still listed after it was deleted"
        todo = [d for d in todo if d.object_id not in tried]
        if not todo:
            return tally
        tried |= {d.object_id for d in todo}
        await _delete_all(dms, repo, todo, tally, progress, concurrency, pace, list(retry_delays_ms))


async def _delete_all(
    dms: OffboardingDms,
    repo: RepositoryRef,
    documents: list[DocumentVersion],
    tally: Tally,
    progress: Progress,
    concurrency: int,
    pace: Pace,
    delays_ms: list[int],
) -> None:
    """``concurrency`` deleters take the documents in listing order; the first to fail for good stops all."""
    todo = iter(documents)

    async def deleter() -> None:
        for document in todo:
            await pace.turn()
            await _delete_one(dms, repo, document, tally, delays_ms)
            progress.advance()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(documents))):
                group.create_task(deleter())
    except BaseExceptionGroup as failed:  # the error that stopped the run, as the caller knows it
        raise failed.exceptions[0] from None


async def _next_batch(
    dms: OffboardingDms, repo: RepositoryRef, refused: set[str], page_size: int, batch: int
) -> tuple[list[DocumentVersion], int, int | None]:
    """Up to about ``batch`` documents to delete, from the first page on (documents deleted meanwhile shift
    the pages, so every batch starts at the top again), passing over those DMS refused; with the
    non-documents seen and DMS's count of ROOT's children."""
    found: list[DocumentVersion] = []
    others, skip, total = 0, 0, None
    while len(found) < batch:
        page = await dms.list_children(repo, skip, page_size)
        total = page.total if total is None else total
        found += [d for d in page.documents if d.object_id not in refused]
        others += page.others
        skip += page.size
        if not page.has_more or page.size == 0:
            break
    return found, others, total


async def _delete_one(
    dms: OffboardingDms, repo: RepositoryRef, document: DocumentVersion, tally: Tally, delays_ms: list[int]
) -> None:
    attempt = 1
    while True:
        try:
            versions = await _versions(dms, repo, document)
            if document.checked_out_id and document.checked_out_id != document.object_id:
                # A working copy left by a crashed upload: cancelled first, as DMS may refuse to delete a
                # checked-out document.
                with contextlib.suppress(DmsRejected):
                    await dms.cancel_check_out(repo, document.checked_out_id)
            if await dms.delete(repo, document.object_id):
                tally.documents += 1
                tally.versions += versions
            return
        except TransientError as error:
            if attempt > len(delays_ms):
                raise
            delay = retry_delay_ms(error, attempt, delays_ms)
            log.info("delete_retrying", object_id=document.object_id, attempt=attempt, error=error.message)
            await asyncio.sleep(delay / 1000)
            attempt += 1
        except PermanentError as error:
            log.warning("delete_refused", object_id=document.object_id, error=error.message)
            tally.refused[document.object_id] = f"{error.code}: {error.message}"
            return


async def _versions(dms: OffboardingDms, repo: RepositoryRef, document: DocumentVersion) -> int:
    known = versions_from_label(document.version_label)
    if known is not None:
        return known
    listed = await dms.versions_of(repo, document.object_id)
    return sum(1 for v in listed or [] if not v.is_working_copy)
