"""Finds or creates each tenant's DMS repository (externalId = tenant UUID) and caches the mapping."""

from __future__ import annotations

import asyncio
import uuid

import structlog

from worker import tracing
from worker.dms.protocol import DmsApi, RepositoryRef
from worker.errors import DmsRejected

log = structlog.get_logger(__name__)

# The fixed settings SAP Cloud ALM gives the repository it creates for a tenant (seed document).
REPOSITORY_NAME = "SAP Cloud ALM for Implementation"
REPOSITORY_DESCRIPTION = "Internal Repository for SAP Cloud ALM for Implementation"


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
    """One instance per worker; safe for concurrent use. Never modifies an existing repository."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, uuid.UUID], RepositoryRef] = {}
        self._locks: dict[tuple[str, uuid.UUID], asyncio.Lock] = {}

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

    @staticmethod
    async def _lookup(dms: DmsApi, tenant_id: uuid.UUID) -> RepositoryRef | None:
        wanted = str(tenant_id)
        with tracing.span("repository lookup", attributes=tracing.attributes(tenant_id=wanted)) as span:
            found = next((r for r in await dms.list_repositories() if r.external_id == wanted), None)
            span.set_attribute("dms.repository_found", found is not None)
            return found
