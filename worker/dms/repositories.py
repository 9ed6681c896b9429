"""Finds or creates each tenant's DMS repository (externalId = tenant UUID) and caches the mapping; never
creates one for a tenant an operator offboarded (its tombstone, kept where ``Tombstones`` says)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

import structlog

from worker import tracing
from worker.dms.protocol import DmsApi, RepositoryRef
from worker.errors import DmsRejected, TenantOffboarded

log = structlog.get_logger(__name__)

# The fixed settings SAP Cloud ALM gives the repository it creates for a tenant (seed document).
REPOSITORY_NAME = "SAP Cloud ALM for Implementation"
REPOSITORY_DESCRIPTION = "Internal Repository for SAP Cloud ALM for Implementation"


class Tombstones(Protocol):
    """Which tenants were offboarded (``worker.amqp.tombstones`` keeps them on the broker)."""

    async def holds(self, tenant_id: uuid.UUID) -> bool: ...


class NoTombstones:
    """No tenant is ever offboarded (unit tests, benchmarks of the write path)."""

    async def holds(self, tenant_id: uuid.UUID) -> bool:
        return False


def created_by_this_worker(repo: RepositoryRef) -> bool:
    """Named and described as the repository this worker (and CALM) creates for a tenant."""
    return repo.name == REPOSITORY_NAME and repo.description == REPOSITORY_DESCRIPTION


def repository_spec(tenant_id: uuid.UUID) -> dict[str, object]:
    return {
        "displayName": REPOSITORY_NAME,
        "description": REPOSITORY_DESCRIPTION,
        "repositoryType": "internal",
        "externalId": str(tenant_id),
        "isVersionEnabled": True,
        "isVirusScanEnabled": True,
        "skipVirusScanForLargeFile": False,
        "isEncryptionEnabled": True,
        "isThumbnailEnabled": False,
        "hashAlgorithms": "None",
    }


class TenantRepositories:
    """One instance per worker; safe for concurrent use. Never modifies an existing repository.

    A tenant's tombstone is looked at whenever its repository is not in the cache yet (once per tenant and
    replica while it has one, on every upload while it has none): an offboarded tenant's upload then fails
    with ``tenant_offboarded``, whether its repository is gone or an interrupted offboarding left part of it.
    """

    def __init__(self, tombstones: Tombstones | None = None) -> None:
        self._tombstones = tombstones or NoTombstones()
        self._known: dict[tuple[str, uuid.UUID], RepositoryRef] = {}
        self._locks: dict[tuple[str, uuid.UUID], asyncio.Lock] = {}

    async def offboarded(self, tenant_id: uuid.UUID) -> bool:
        return await self._tombstones.holds(tenant_id)

    async def find(self, dms: DmsApi, tenant_id: uuid.UUID) -> RepositoryRef | None:
        key = (dms.destination.url, tenant_id)
        if key in self._known:
            return self._known[key]
        found = await self._lookup(dms, tenant_id)
        if found is not None:
            self._known[key] = found
        return found

    async def find_or_create(self, dms: DmsApi, tenant_id: uuid.UUID) -> RepositoryRef:
        key = (dms.destination.url, tenant_id)
        if key in self._known:
            return self._known[key]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key in self._known:
                return self._known[key]
            repo = await self._lookup(dms, tenant_id)
            if await self._tombstones.holds(tenant_id):
                log.info("tenant_offboarded", tenant_id=str(tenant_id), repository_left=repo is not None)
                raise TenantOffboarded(
                    f"tenant {tenant_id} was offboarded: no repository is created for it until an operator runs "
                    "`python -m worker tenant reenable`"
                )
            if repo is None:
                try:
                    repo = await dms.create_repository(repository_spec(tenant_id))
                    log.info("repository_created", tenant_id=str(tenant_id), repository_id=repo.id)
                except DmsRejected as exc:
                    if exc.status != 409 or "already exists" not in exc.message:
                        raise
                    # Another replica won the race: its repository is the tenant's.
                    repo = await self._lookup(dms, tenant_id)
                    if repo is None:
                        raise
            self._known[key] = repo
            return repo

    async def vanished(self, dms: DmsApi, tenant_id: uuid.UUID, repo: RepositoryRef) -> bool:
        """After DMS answered 404 in ``repo``: whether the tenant's repository is gone (deleted, or another
        one in its place) rather than just the object asked for. Either way the cached entry is dropped, and
        the next ``find_or_create`` looks again (and at the tombstone)."""
        key = (dms.destination.url, tenant_id)
        if self._known.get(key) == repo:
            del self._known[key]
        now = await self._lookup(dms, tenant_id)
        if now is None or now.id != repo.id:
            log.warning("repository_vanished", tenant_id=str(tenant_id), repository_id=repo.id)
            return True
        return False

    @staticmethod
    async def _lookup(dms: DmsApi, tenant_id: uuid.UUID) -> RepositoryRef | None:
        wanted = str(tenant_id)
        with tracing.span("repository lookup", attributes=tracing.attributes(tenant_id=wanted)) as span:
            found = next((r for r in await dms.list_repositories() if r.external_id == wanted), None)
            span.set_attribute("dms.repository_found", found is not None)
            return found
