"""One tenant's offboarding from start to end: find its repository (``plan``), make sure nothing is on its way
for it (``census``), lay its tombstone, empty ROOT (``deletion``), delete the repository through the admin
API once it is empty, and publish ``dms.tenant.offboarded``. Or, for the dry run, say what that would do.

The tombstone goes down before the first delete: from then on no replica creates a repository for the
tenant, and one that has not cached the repository yet refuses its uploads as ``tenant_offboarded``; so a
run stopped half-way leaves a tenant that is offboarded in intent, and the next run finishes it.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from worker.contracts import TenantOffboarded, TenantOffboardedData
from worker.dms.protocol import RepositoryRef
from worker.offboarding.census import Census, refusal
from worker.offboarding.deletion import OffboardingDms, Pace, Progress, Tally, count, empty
from worker.offboarding.plan import OffboardingIncomplete, OffboardingRefused, choose_repository

log = structlog.get_logger(__name__)


class OffboardingAdmin(OffboardingDms, Protocol):
    """What offboarding needs of the tenant's DMS: ``OffboardingDms`` and the admin API's list and delete."""

    async def list_repositories(self) -> list[RepositoryRef]: ...

    async def delete_repository(self, repository_id: str) -> bool: ...


class TombstoneStore(Protocol):
    async def holds(self, tenant_id: uuid.UUID) -> bool: ...

    async def record(self, tenant_id: uuid.UUID, repository_id: str | None) -> bool: ...


@dataclass(frozen=True)
class Pacing:
    page_size: int = 100
    concurrency: int = 8
    rate_per_s: float | None = 50.0


@dataclass(frozen=True)
class Plan:
    """What ``--yes`` would do, as the dry run prints it."""

    tenant_id: uuid.UUID
    repository: RepositoryRef | None
    tally: Tally
    tombstone: bool  # laid already (an earlier run began)
    census: Census

    def as_row(self) -> dict[str, Any]:
        repo = self.repository
        return {
            "tenant_id": str(self.tenant_id),
            "repository": None
            if repo is None
            else {"id": repo.id, "name": repo.name, "description": repo.description, "external_id": repo.external_id},
            "documents": self.tally.documents,
            "versions": self.tally.versions,
            "other_objects": self.tally.others,
            "tombstone": self.tombstone,
            "pending": self.census.as_row(),
            "would_refuse": refusal(self.census, self.tenant_id),
        }


class Offboarding:
    def __init__(
        self,
        dms: OffboardingAdmin,
        tombstones: TombstoneStore,
        census: Callable[[], Awaitable[Census]],
        publish: Callable[[TenantOffboarded], Awaitable[None]],
        progress: Progress,
        event_source: str,
        pacing: Pacing | None = None,
    ) -> None:
        self._dms = dms
        self._tombstones = tombstones
        self._census = census
        self._publish = publish
        self._progress = progress
        self._source = event_source
        self._pacing = pacing or Pacing()

    async def plan(self, tenant_id: uuid.UUID) -> Plan:
        """The dry run: nothing changes."""
        repo = choose_repository(await self._dms.list_repositories(), tenant_id)
        tally = await count(self._dms, repo, self._pacing.page_size, self._progress) if repo else Tally()
        return Plan(tenant_id, repo, tally, await self._tombstones.holds(tenant_id), await self._census())

    async def run(self, tenant_id: uuid.UUID, force: bool = False) -> TenantOffboarded:
        started = time.monotonic()
        repo = choose_repository(await self._dms.list_repositories(), tenant_id)
        pending = refusal(await self._census(), tenant_id)
        if pending and not force:
            raise OffboardingRefused(pending)
        if pending:
            log.warning("offboarding_forced", tenant_id=str(tenant_id), pending=pending)
        resumed = not await self._tombstones.record(tenant_id, repo.id if repo else None)
        tally = Tally()
        if repo is not None:
            tally = await self._empty(tenant_id, repo)
            await self._delete_repository(tenant_id, repo)
        event = TenantOffboarded(
            id=str(uuid.uuid4()),
            source=self._source,
            time=dt.datetime.now(dt.UTC),
            subject=str(tenant_id),
            data=TenantOffboardedData(
                tenant_id=tenant_id,
                repository_id=repo.id if repo else None,
                documents_deleted=tally.documents,
                versions_deleted=tally.versions,
                resumed=resumed,
                forced=bool(pending),
                duration_s=round(time.monotonic() - started, 3),
            ),
        )
        await self._publish(event)
        return event

    async def _empty(self, tenant_id: uuid.UUID, repo: RepositoryRef) -> Tally:
        p = self._pacing
        tally = await empty(
            self._dms,
            repo,
            self._progress,
            page_size=p.page_size,
            concurrency=p.concurrency,
            pace=Pace(p.rate_per_s),
        )
        done = f"deleted {tally.documents} documents ({tally.versions} versions) in this run"
        if tally.refused:
            first_id, why = next(iter(tally.refused.items()))
            raise OffboardingIncomplete(
                f"DMS would not delete {len(tally.refused)} documents of repository {repo.id} (first: {first_id}, "
                f"{why}); {done}. The repository stays and tenant {tenant_id} stays offboarded: fix that in DMS, "
                "then run again to finish"
            )
        if tally.others:
            raise OffboardingIncomplete(
                f"ROOT of repository {repo.id} still holds {tally.others} objects that are not documents (folders; "
                f"this worker never creates any, and this tool deletes documents only); {done}. Remove them in "
                "DMS, then run again to finish"
            )
        return tally

    async def _delete_repository(self, tenant_id: uuid.UUID, repo: RepositoryRef) -> None:
        # A last look before the one call that deletes a whole repository: still the same one, still ours,
        # still empty (an upload running on a replica with --force may have added a document).
        again = choose_repository(await self._dms.list_repositories(), tenant_id)
        if again is None or again.id != repo.id:
            raise OffboardingRefused(
                f"tenant {tenant_id}'s repository changed while it was emptied ({repo.id} -> "
                f"{again.id if again else 'none'}): not deleting anything more; look in DMS, then run again"
            )
        left = await self._dms.list_children(repo, 0, 1)
        if left.size:
            raise OffboardingIncomplete(
                f"repository {repo.id} got new documents while it was emptied (an upload still running?): "
                "run again to finish"
            )
        self._progress.start("deleting the repository", 1)
        await self._dms.delete_repository(repo.id)
        self._progress.advance()
