"""What the rest of the worker needs from DMS, as a ``typing.Protocol``, and the typed results it returns.

``worker.dms.client.DmsClient`` is the real thing (HTTP); the handlers and ``TenantRepositories`` depend
only on ``DmsApi``, so a small in-memory fake stands in for it in unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class RepositoryRef:
    id: str
    root_folder_id: str
    external_id: str | None


@dataclass(frozen=True)
class DocumentVersion:
    object_id: str
    version_label: str
    version_series_id: str
    file_name: str | None
    length: int | None
    mime_type: str | None
    checkin_comment: str | None
    checked_out_id: str | None
    description: str | None = None
    checked_out_by: str | None = None  # cmis:versionSeriesCheckedOutBy: who holds the working copy, if any

    @property
    def is_working_copy(self) -> bool:
        return self.checked_out_id is not None and self.checked_out_id == self.object_id


class ContentSource(Protocol):
    """An upload's content without holding it: its size, and a fresh stream from its first byte for every send
    (a retried request sends it again). The caller closes what ``open`` returns. ``bytes`` are accepted too."""

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO: ...


Content = bytes | ContentSource


class DestinationRef(Protocol):
    @property
    def url(self) -> str: ...


class DmsApi(Protocol):
    """One DMS destination: one method per admin or CMIS action."""

    @property
    def destination(self) -> DestinationRef: ...

    async def list_repositories(self) -> list[RepositoryRef]: ...

    async def create_repository(self, spec: dict[str, Any]) -> RepositoryRef: ...

    async def create_document(
        self,
        repo: RepositoryRef,
        name: str,
        file_name: str,
        mime_type: str,
        content: Content,
        description: str | None = None,
    ) -> DocumentVersion: ...

    async def check_out(self, repo: RepositoryRef, object_id: str) -> str: ...

    async def check_in(
        self,
        repo: RepositoryRef,
        pwc_id: str,
        file_name: str,
        mime_type: str,
        content: Content,
        comment: str,
        description: str | None = None,
    ) -> DocumentVersion: ...

    async def cancel_check_out(self, repo: RepositoryRef, pwc_id: str) -> None: ...

    async def delete(self, repo: RepositoryRef, object_id: str) -> bool: ...

    async def find_by_name(self, repo: RepositoryRef, name: str) -> DocumentVersion | None: ...

    async def versions_by_name(self, repo: RepositoryRef, name: str) -> list[DocumentVersion] | None: ...
