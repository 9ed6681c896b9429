"""An offboarded tenant's uploads end as ``tenant_offboarded`` and never bring its repository back: whether
the repository is gone, half emptied, or still cached by the replica; and whether or not the tenant's
destination was disconnected too. A repository deleted by hand (no tombstone) is created afresh as before."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from worker.commands.handlers import Handlers
from worker.dms.protocol import DocumentVersion, RepositoryRef
from worker.dms.repositories import TenantRepositories
from worker.errors import DmsRejected, TenantOffboarded, UnknownTenant
from worker.producer import delete_command, upload_command
from worker.settings import CommandSettings

from .test_handlers import TENANT, FakeClients, FakeDms, delivery


@dataclass
class FakeTombstones:
    tenants: set[uuid.UUID] = field(default_factory=set)
    asked: int = 0

    async def holds(self, tenant_id: uuid.UUID) -> bool:
        self.asked += 1
        return tenant_id in self.tenants


class DeletableDms(FakeDms):
    """Answers 404 in a repository that was deleted, as DMS does."""

    def _check(self, repo: RepositoryRef, operation: str) -> None:
        if repo not in self.repos:
            self.calls.append(operation)
            raise DmsRejected(f"DMS {operation} answered 404 objectNotFound: Repository {repo.id} not found", 404)

    async def create_document(self, repo, name, file_name, mime, content, description=None) -> DocumentVersion:
        self._check(repo, "createDocument")
        return await super().create_document(repo, name, file_name, mime, content, description)

    async def check_out(self, repo, object_id: str) -> str:
        self._check(repo, "checkOut")
        return await super().check_out(repo, object_id)

    def drop_repository(self) -> None:
        self.repos.clear()
        self.docs.clear()


@pytest.fixture
def dms() -> DeletableDms:
    return DeletableDms()


@pytest.fixture
def tombstones() -> FakeTombstones:
    return FakeTombstones()


@pytest.fixture
def handlers(dms: DeletableDms, tombstones: FakeTombstones) -> Handlers:
    settings = CommandSettings(max_file_size=1024)
    repositories = TenantRepositories(tombstones)
    return Handlers(settings, FakeClients(dms, {TENANT}), repositories, http=None)  # type: ignore[arg-type]


def upload(document: uuid.UUID | None = None, tenant: uuid.UUID = TENANT):
    return upload_command(tenant, document or uuid.uuid4(), "a.txt", "text/plain", b"one")


async def test_no_repository_is_created_for_an_offboarded_tenant(
    handlers: Handlers, dms: DeletableDms, tombstones: FakeTombstones
) -> None:
    tombstones.tenants.add(TENANT)
    with pytest.raises(TenantOffboarded) as refused:
        await handlers.handle_upload(upload(), delivery())
    assert refused.value.code == "tenant_offboarded" and "tenant reenable" in refused.value.message
    assert dms.calls == ["listRepositories"] and dms.repos == []


async def test_a_repository_an_interrupted_offboarding_left_takes_no_uploads(
    handlers: Handlers, dms: DeletableDms, tombstones: FakeTombstones
) -> None:
    dms.repos.append(RepositoryRef("repo-0", "root", str(TENANT)))
    tombstones.tenants.add(TENANT)
    with pytest.raises(TenantOffboarded):
        await handlers.handle_upload(upload(), delivery())
    assert "createDocument" not in dms.calls


async def test_a_replica_that_cached_the_repository_finds_it_gone_and_refuses(
    handlers: Handlers, dms: DeletableDms, tombstones: FakeTombstones
) -> None:
    await handlers.handle_upload(upload(), delivery("c1"))
    dms.drop_repository()
    tombstones.tenants.add(TENANT)
    dms.calls.clear()
    with pytest.raises(TenantOffboarded):
        await handlers.handle_upload(upload(), delivery("c2"))
    assert dms.calls == ["createDocument", "listRepositories", "listRepositories"]  # the 404, then look again
    assert dms.repos == []


async def test_a_repository_deleted_by_hand_without_a_tombstone_is_created_again(
    handlers: Handlers, dms: DeletableDms, tombstones: FakeTombstones
) -> None:
    await handlers.handle_upload(upload(), delivery("c1"))
    dms.drop_repository()
    written = await handlers.handle_upload(upload(), delivery("c2"))
    assert written.version_label == "1.0" and [r.external_id for r in dms.repos] == [str(TENANT)]


async def test_the_tombstone_is_read_once_per_tenant_while_its_repository_is_cached(
    handlers: Handlers, tombstones: FakeTombstones
) -> None:
    for n in range(3):
        await handlers.handle_upload(upload(), delivery(f"c{n}"))
    assert tombstones.asked == 1


async def test_an_offboarded_tenant_without_a_destination_is_offboarded_not_unknown(
    handlers: Handlers, tombstones: FakeTombstones
) -> None:
    gone = uuid.uuid4()
    with pytest.raises(UnknownTenant):  # no tombstone: the DLQ keeps it until a destination exists
        await handlers.handle_upload(upload(tenant=gone), delivery())
    tombstones.tenants.add(gone)
    with pytest.raises(TenantOffboarded):
        await handlers.handle_upload(upload(tenant=gone), delivery())


async def test_a_delete_for_an_offboarded_tenant_finds_nothing_and_creates_nothing(
    handlers: Handlers, dms: DeletableDms, tombstones: FakeTombstones
) -> None:
    tombstones.tenants.add(TENANT)
    result = await handlers.handle_delete(delete_command(TENANT, uuid.uuid4()), delivery())
    assert (result.existed, result.repository_id) == (False, None) and dms.repos == []
