"""The whole offboarding with fakes for DMS, the tombstones, the census and the event: in the seed's order
(documents, then the repository), the tombstone before the first delete, refusals before any change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

import pytest

from worker.contracts import TenantOffboarded
from worker.offboarding.census import Census
from worker.offboarding.plan import OffboardingIncomplete, OffboardingRefused
from worker.offboarding.procedure import Offboarding, Pacing

from .fakes import FakeDms, FakeProgress, document, ours, refusal

TENANT, OTHER = uuid.uuid4(), uuid.uuid4()
IDLE = Census(replicas=2, answered=2, held=0, queued=0, queues=15, dead_letters=0)
BUSY = replace(IDLE, held=3)


@dataclass
class FakeTombstones:
    dms: FakeDms
    tenants: dict[uuid.UUID, str | None] = field(default_factory=dict)
    laid_after: list[str] = field(default_factory=list)  # the DMS calls made before the tombstone went down

    async def holds(self, tenant_id: uuid.UUID) -> bool:
        return tenant_id in self.tenants

    async def record(self, tenant_id: uuid.UUID, repository_id: str | None) -> bool:
        if tenant_id in self.tenants:
            return False
        self.tenants[tenant_id] = repository_id
        self.laid_after = list(self.dms.calls)
        return True


@dataclass
class World:
    dms: FakeDms
    tombstones: FakeTombstones
    events: list[TenantOffboarded]
    census: Census = IDLE

    def offboarding(self) -> Offboarding:
        async def census() -> Census:
            return self.census

        async def publish(event: TenantOffboarded) -> None:
            self.events.append(event)

        pacing = Pacing(page_size=3, concurrency=2, rate_per_s=None)
        return Offboarding(self.dms, self.tombstones, census, publish, FakeProgress(), "urn:test", pacing)


@pytest.fixture
def world() -> World:
    dms = FakeDms()
    dms.add(ours(TENANT, "mine"), *(document(f"d{n}", versions=2) for n in range(7)))
    dms.add(ours(OTHER, "theirs"), document("keep"))
    return World(dms, FakeTombstones(dms), [])


async def test_documents_then_the_repository_then_one_event(world: World) -> None:
    event = await world.offboarding().run(TENANT)
    assert [r.id for r in world.dms.repos] == ["theirs"] and "mine" not in world.dms.roots
    deletes = [c for c in world.dms.calls if c.startswith("delete")]
    assert deletes[-1] == "deleteRepository mine" and len(deletes) == 8
    assert not any(c.startswith("delete") for c in world.tombstones.laid_after)  # tombstone first
    assert world.events == [event] and event.type == "dms.tenant.offboarded" and event.subject == str(TENANT)
    data = event.data
    assert (data.repository_id, data.documents_deleted, data.versions_deleted) == ("mine", 7, 14)
    assert (data.resumed, data.forced) == (False, False)
    assert world.tombstones.tenants == {TENANT: "mine"}


async def test_the_dry_run_says_what_and_changes_nothing(world: World) -> None:
    plan = await world.offboarding().plan(TENANT)
    row = plan.as_row()
    assert row["repository"]["id"] == "mine" and (row["documents"], row["versions"]) == (7, 14)
    assert (row["tombstone"], row["would_refuse"]) == (False, None)
    assert not any(c.startswith("delete") for c in world.dms.calls) and world.tombstones.tenants == {}
    assert world.events == []


async def test_pending_commands_refuse_before_any_change_unless_forced(world: World) -> None:
    world.census = BUSY
    with pytest.raises(OffboardingRefused, match="3 held by the replicas"):
        await world.offboarding().run(TENANT)
    assert world.tombstones.tenants == {} and len(world.dms.roots["mine"]) == 7
    assert "would_refuse" in (await world.offboarding().plan(TENANT)).as_row()
    event = await world.offboarding().run(TENANT, force=True)
    assert event.data.forced and event.data.documents_deleted == 7


async def test_a_foreign_repository_is_refused_untouched(world: World) -> None:
    world.dms.repos[0] = replace(world.dms.repos[0], name="Another app's files")
    for attempt in (world.offboarding().plan, world.offboarding().run):
        with pytest.raises(OffboardingRefused, match="not ours to delete"):
            await attempt(TENANT)
    assert world.tombstones.tenants == {} and len(world.dms.roots["mine"]) == 7
    assert world.dms.calls == ["listRepositories", "listRepositories"]


async def test_a_second_run_finishes_what_an_interrupted_one_began(world: World) -> None:
    world.tombstones.tenants[TENANT] = "mine"  # laid by the first run, which then died after 4 documents
    del world.dms.roots["mine"][:4]
    event = await world.offboarding().run(TENANT)
    assert (event.data.resumed, event.data.documents_deleted) == (True, 3)
    assert [r.id for r in world.dms.repos] == ["theirs"]


async def test_a_tenant_without_a_repository_gets_its_tombstone_and_the_event(world: World) -> None:
    lone = uuid.uuid4()
    event = await world.offboarding().run(lone)
    assert event.data.repository_id is None and event.data.documents_deleted == 0
    assert world.tombstones.tenants[lone] is None and len(world.dms.repos) == 2


async def test_a_document_dms_refuses_keeps_the_repository(world: World) -> None:
    world.dms.fail["d2-v2"] = [refusal("d2-v2")]
    with pytest.raises(OffboardingIncomplete, match=r"would not delete 1 documents .*d2-v2.*legal hold"):
        await world.offboarding().run(TENANT)
    assert [r.id for r in world.dms.repos] == ["mine", "theirs"] and world.events == []
    assert [d.object_id for d in world.dms.roots["mine"]] == ["d2-v2"]


async def test_folders_in_root_keep_the_repository(world: World) -> None:
    world.dms.folders["mine"] = 1
    with pytest.raises(OffboardingIncomplete, match="1 objects that are not documents"):
        await world.offboarding().run(TENANT)
    assert "mine" in [r.id for r in world.dms.repos]


async def test_a_repository_swapped_meanwhile_is_not_deleted(world: World) -> None:
    dms = world.dms
    listings = 0
    original = dms.list_repositories

    async def swapping():
        nonlocal listings
        listings += 1
        if listings == 2:  # the last look before the delete
            dms.repos[0] = replace(dms.repos[0], id="impostor")
        return await original()

    dms.list_repositories = swapping  # type: ignore[method-assign]
    with pytest.raises(OffboardingRefused, match="changed while it was emptied"):
        await world.offboarding().run(TENANT)
    assert not any(c.startswith("deleteRepository") for c in dms.calls)
