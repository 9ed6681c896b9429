"""What this replica knows of the documents it wrote or looked at: the latest version and which command
wrote which version. It spares DMS calls (a later version needs no lookup) and recognises a command that
already took effect (a producer's republish, a redelivery) without asking DMS.

It is only trusted while this replica owns the document's shard: an entry is dropped when its shard is
taken again (someone else may have written meanwhile), when an attempt on the document fails in a way that
may have left DMS changed, and on redelivery. Then the next command looks at DMS again.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from worker.dms.protocol import DocumentVersion

MARKER_PREFIX = "dms-upload-worker command "

DocumentKey = tuple[uuid.UUID, uuid.UUID]  # (tenant, document)


def command_marker(source: str, command_id: str) -> str:
    """Written on every version (``cmis:description``, and the check-in comment of later versions): the
    CloudEvent identity, ``source`` plus ``id``, digested to a fixed length."""
    digest = hashlib.sha256(f"{source}\n{command_id}".encode()).hexdigest()[:40]
    return MARKER_PREFIX + digest


def marker_of(version: DocumentVersion) -> str | None:
    for text in (version.description, version.checkin_comment):
        if text and text.startswith(MARKER_PREFIX):
            return text
    return None


@dataclass
class KnownDocument:
    shard: int | None
    latest: DocumentVersion | None  # None: deleted
    written_by: dict[str, DocumentVersion] = field(default_factory=dict)  # command marker -> its version
    deleted_by: dict[str, bool] = field(default_factory=dict)  # command marker -> "existed" it reported

    @classmethod
    def from_versions(cls, shard: int | None, versions: list[DocumentVersion]) -> KnownDocument:
        """From DMS's version list (newest first; a working copy, if any, among them)."""
        committed = [v for v in versions if not v.is_working_copy]
        written_by = {marker: v for v in reversed(committed) if (marker := marker_of(v)) is not None}
        return cls(shard, committed[0] if committed else None, written_by)


class KnownDocuments:
    """A bounded memory (least recently used go first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[DocumentKey, KnownDocument] = OrderedDict()

    def get(self, key: DocumentKey) -> KnownDocument | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def remember(self, key: DocumentKey, entry: KnownDocument) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, key: DocumentKey) -> None:
        self._entries.pop(key, None)

    def forget_shard(self, shard: int) -> None:
        for key in [k for k, entry in self._entries.items() if entry.shard == shard]:
            del self._entries[key]

    def forget_all(self) -> None:
        self._entries.clear()
