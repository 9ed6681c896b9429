"""What offboarding may touch, decided from what DMS lists (pure, no I/O): the one repository of the tenant
this worker created, or a refusal that names why nothing is touched."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from worker.dms.protocol import RepositoryRef
from worker.dms.repositories import REPOSITORY_DESCRIPTION, REPOSITORY_NAME, created_by_this_worker

_MAJOR_LABEL = re.compile(r"^([1-9][0-9]*)\.0$")


class OffboardingRefused(Exception):
    """Offboarding stops before it changes anything; the message is the one line the operator reads."""


class OffboardingIncomplete(Exception):
    """Offboarding deleted what it could and stopped; running it again continues."""


def choose_repository(repositories: Sequence[RepositoryRef], tenant_id: uuid.UUID) -> RepositoryRef | None:
    """The repository to empty and delete, None when the tenant has none; raises ``OffboardingRefused`` for
    anything but exactly one repository whose externalId is the tenant UUID and whose name and description
    are the ones this worker gives it. Repositories of other externalIds are never considered."""
    wanted = str(tenant_id)
    # A spelling of the same UUID in other case or with spaces claims the tenant too: ambiguous, not ignored.
    claimants = [r for r in repositories if (r.external_id or "").strip().lower() == wanted]
    if not claimants:
        return None
    if len(claimants) > 1:
        ids = ", ".join(sorted(r.id for r in claimants))
        raise OffboardingRefused(
            f"{len(claimants)} repositories claim tenant {wanted} ({ids}): not deciding which one to delete; "
            "nothing was touched. Sort them out in DMS by hand first"
        )
    (repo,) = claimants
    if repo.external_id != wanted:
        raise OffboardingRefused(
            f"repository {repo.id} has externalId {repo.external_id!r}, not exactly {wanted!r}: this worker did "
            "not create it; nothing was touched"
        )
    if not created_by_this_worker(repo):
        raise OffboardingRefused(
            f"repository {repo.id} has tenant {wanted}'s externalId but is named {repo.name!r} and described "
            f"{repo.description!r}, not {REPOSITORY_NAME!r} / {REPOSITORY_DESCRIPTION!r} as this worker creates "
            "it: not ours to delete; nothing was touched"
        )
    return repo


def versions_from_label(label: str) -> int | None:
    """How many versions a document has, read from its latest label when that is a major one: this worker
    (like CALM) writes only major versions, 1.0, 2.0, ... so ``N.0`` is the N-th. None for any other label
    (a minor or odd one): then the versions must be listed."""
    match = _MAJOR_LABEL.match(label or "")
    return int(match.group(1)) if match else None
