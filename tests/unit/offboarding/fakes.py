"""A small in-memory DMS with repositories and a ROOT of documents, for the offboarding unit tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from worker.dms.protocol import DocumentPage, DocumentVersion, RepositoryRef
from worker.dms.repositories import REPOSITORY_DESCRIPTION, REPOSITORY_NAME
from worker.errors import DmsRejected, WorkerError


def ours(tenant: uuid.UUID, repo_id: str = "repo-1") -> RepositoryRef:
    return RepositoryRef(repo_id, f"root-{repo_id}", str(tenant), REPOSITORY_NAME, REPOSITORY_DESCRIPTION)


def document(name: str, versions: int = 1, label: str | None = None, checked_out: bool = False) -> DocumentVersion:
    object_id = f"{name}-v{versions}"
    return DocumentVersion(
        object_id=object_id,
        version_label=label or f"{versions}.0",
        version_series_id=f"series-{name}",
        file_name=f"{name}.pdf",
        length=1,
        mime_type="application/pdf",
        checkin_comment=None,
        checked_out_id=f"{name}-pwc" if checked_out else None,
    )


@dataclass
class FakeDms:
    repos: list[RepositoryRef] = field(default_factory=list)
    roots: dict[str, list[DocumentVersion]] = field(default_factory=dict)  # repository id -> ROOT, listing order
    folders: dict[str, int] = field(default_factory=dict)  # repository id -> folders in ROOT
    history: dict[str, int] = field(default_factory=dict)  # object id -> versions, for odd labels
    fail: dict[str, list[WorkerError]] = field(default_factory=dict)  # object id -> errors its deletes raise first
    calls: list[str] = field(default_factory=list)

    def add(self, repo: RepositoryRef, *documents: DocumentVersion) -> None:
        if repo not in self.repos:
            self.repos.append(repo)
        self.roots.setdefault(repo.id, []).extend(documents)

    async def list_repositories(self) -> list[RepositoryRef]:
        self.calls.append("listRepositories")
        return list(self.repos)

    async def delete_repository(self, repository_id: str) -> bool:
        self.calls.append(f"deleteRepository {repository_id}")
        self.repos = [r for r in self.repos if r.id != repository_id]
        return self.roots.pop(repository_id, None) is not None

    async def list_children(self, repo: RepositoryRef, skip: int, max_items: int) -> DocumentPage:
        self.calls.append("getChildren")
        root = self.roots.get(repo.id, [])
        folders = self.folders.get(repo.id, 0)
        entries: list[DocumentVersion | None] = [*root, *([None] * folders)]
        page = entries[skip : skip + max_items]
        documents = [d for d in page if d is not None]
        return DocumentPage(documents, len(page) - len(documents), skip + max_items < len(entries), len(entries))

    async def versions_of(self, repo: RepositoryRef, object_id: str) -> list[DocumentVersion] | None:
        self.calls.append(f"getAllVersions {object_id}")
        found = next((d for d in self.roots.get(repo.id, []) if d.object_id == object_id), None)
        return None if found is None else [found] * self.history.get(object_id, 1)

    async def cancel_check_out(self, repo: RepositoryRef, pwc_id: str) -> None:
        self.calls.append(f"cancelCheckOut {pwc_id}")

    async def delete(self, repo: RepositoryRef, object_id: str) -> bool:
        self.calls.append(f"delete {object_id}")
        if self.fail.get(object_id):
            raise self.fail[object_id].pop(0)
        root = self.roots.get(repo.id, [])
        before = len(root)
        root[:] = [d for d in root if d.object_id != object_id]
        return len(root) < before


def refusal(object_id: str) -> DmsRejected:
    return DmsRejected(f"DMS delete answered 409 constraint: {object_id} is on legal hold", 409, "constraint")


@dataclass
class FakeProgress:
    stages: list[tuple[str, int | None]] = field(default_factory=list)
    advanced: int = 0

    def start(self, stage: str, total: int | None) -> None:
        self.stages.append((stage, total))

    def advance(self) -> None:
        self.advanced += 1
