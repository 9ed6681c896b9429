"""Which repository offboarding may touch (pure): exactly one, with the tenant's externalId and the worker's
name and description; anything else is refused before a single call changes DMS."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from worker.dms.protocol import RepositoryRef
from worker.offboarding.plan import OffboardingRefused, choose_repository, versions_from_label

from .fakes import ours

TENANT = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")
OTHER = uuid.UUID("d0c5e1a2-3b4c-4d5e-8f60-718293a4b5c6")


class TestChooseRepository:
    def test_the_tenants_own_repository_among_others(self) -> None:
        mine, theirs = ours(TENANT, "mine"), ours(OTHER, "theirs")
        foreign = RepositoryRef("x", "root-x", None, "Team share", "")
        assert choose_repository([theirs, foreign, mine], TENANT) == mine

    def test_none_when_the_tenant_has_no_repository(self) -> None:
        assert choose_repository([ours(OTHER)], TENANT) is None
        assert choose_repository([], TENANT) is None

    @pytest.mark.parametrize(
        "change",
        [{"name": "Documents of another app"}, {"description": "mine"}, {"name": None}],
        ids=["other name", "other description", "no name"],
    )
    def test_a_foreign_repository_with_the_tenants_external_id_is_refused(self, change: dict[str, Any]) -> None:
        foreign = replace(ours(TENANT, "foreign"), **change)
        with pytest.raises(OffboardingRefused, match=r"foreign.*not ours to delete; nothing was touched"):
            choose_repository([foreign, ours(OTHER)], TENANT)

    def test_two_repositories_claiming_the_tenant_are_refused(self) -> None:
        with pytest.raises(OffboardingRefused, match=r"2 repositories claim tenant \S+ \(a, b\)"):
            choose_repository([ours(TENANT, "b"), ours(TENANT, "a")], TENANT)

    def test_the_same_uuid_spelled_otherwise_claims_the_tenant_too(self) -> None:
        upper = replace(ours(TENANT, "upper"), external_id=str(TENANT).upper())
        with pytest.raises(OffboardingRefused, match="not exactly"):
            choose_repository([upper], TENANT)
        with pytest.raises(OffboardingRefused, match="2 repositories"):
            choose_repository([upper, ours(TENANT)], TENANT)


@pytest.mark.parametrize(
    ("label", "versions"),
    [("1.0", 1), ("7.0", 7), ("500.0", 500), ("1.1", None), ("0.1", None), ("pwc", None), ("", None)],
)
def test_versions_from_a_major_label(label: str, versions: int | None) -> None:
    assert versions_from_label(label) == versions
